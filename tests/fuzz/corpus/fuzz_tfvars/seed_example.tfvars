# Core configuration
aws_region   = "us-west-2"
environment  = "production"
project_name = "chat-app"

# WebSocket API configuration
api_name    = "chat-websocket-api"
stage_name  = "prod"

# DynamoDB configuration
dynamodb_billing_mode = "PAY_PER_REQUEST"
enable_dynamodb_point_in_time_recovery = true

# Lambda configuration
lambda_runtime = "python3.11"
lambda_memory_size = 512
lambda_message_memory_size = 1024

# Security configuration
enable_encryption = true
enable_xray_tracing = true
log_retention_days = 30

# Monitoring configuration
enable_detailed_metrics = true
logging_level = "INFO"
throttling_burst_limit = 1000
throttling_rate_limit = 2000

# Custom routes
custom_routes = [
  "chat",
  "join_room",
  "leave_room",
  "private_message",
  "room_list",
  "typing_indicator"
]

# Additional tags
additional_tags = {
  Owner       = "platform-team"
  CostCenter  = "engineering"
  Application = "chat-service"
}
