route_throttling = {
  chat = { burst_limit = 10, rate_limit = 5 }
  join_room = { burst_limit = 2, rate_limit = 1 },
  "private_message": {
    rate_limit  = "3"
    burst_limit = 1e2
  }
}
allowed_origins = ["https://chat.example.com", "http://localhost:3000"]
