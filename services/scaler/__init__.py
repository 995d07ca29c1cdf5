"""The scaler: owns the fleet's desired size and policy; its leader decides and commands the provisioners.

`core/` is pure (no asyncio, NATS, clock or randomness; `now` is passed in) and returns what it
wants done; the glue around it does it:

- `core/model`: the fleet view (`FleetState`) and the commands the core returns.
- `core/track`: reducers that fold provisioner events, VM lists, balancer reports and load into it.
- `core/decide`, `autoscale`, `reading`, `level`, `ahead`, `churn`, `boottimes`: how big the fleet
  should be (target tracking, windows, bursts, the boot lead, the churn budget).
- `core/reconcile`, `placement`, `pool`, `liveness`: which creates, drains and destroys move the VMs
  there, on which host, the warm pool, and which sick VM to replace.
- `core/edits`: what each public command does to the desired state, and the status answer.

Glue: `service` (loops, the public commands), `events` (the subscriptions every replica folds
in), `actuator` (commands out to the provisioners, their answers back), `lease` (leadership in
KV), `store` (the desired state in KV, one revision-checked write per change), `bootstrap` (the composition
root) and `settings`.
"""
