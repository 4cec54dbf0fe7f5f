port = 1e3
max_frame_size = 65536
throttling_rate_limit = 0
x = -1.5e-3
