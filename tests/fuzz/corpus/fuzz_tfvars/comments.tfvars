/* block
 comment */ stage_name = "x" // tail
# hash
port = 9000 /* c */
