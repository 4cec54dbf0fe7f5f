stage_name = "unterminated
port = [1, 2
