aws_region = "eu-west-1"
port = 0
enable_data_trace = false
mode = "echo"
listen = "::1"
