environment = null
lambda_timeout = "30"
enable_encryption = "false"
