"""The balancer's sans-I/O core: pure decisions that take `now` and never touch a socket or clock."""
