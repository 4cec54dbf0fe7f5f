custom_routes = [
  "a", # c
  "b",
]
