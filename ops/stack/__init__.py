"""The local stack behind `quicfleet up`: what to start (`plan`), the supervisor that starts it
(`supervisor`), one child process it runs (`child`) and the restart backoff for a service that
exits on its own (`restarts`)."""
