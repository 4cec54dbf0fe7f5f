# an unknown member, a missing one, out of range and not an object
environment = "production"
auth_mode = "jwt"
jwt_algorithm = "ES256"
tls_cert_file = "/c.pem"
route_throttling = { chat = { burts_limit = 10, rate_limit = 5 }, room_list = { burst_limit = 2 },
  typing = { burst_limit = 5001, rate_limit = -1 }, "" = 3, x = null }
