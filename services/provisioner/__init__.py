"""The provisioner: the only libvirt client, and the only writer of VM state (`fleet.vm.*`).

`core/` is pure (no asyncio, libvirt, NATS, clock or randomness): the state machine (`machine`),
the changes a VM's steps ask for (`changes`), the rules a command meets (`commands`) and its
refusals (`errors`), the clone plan (`clone`), tags (`tags`), addresses (`addresses`), the
reconcile's decisions (`reconcile`), pauses (`pauses`), the warm pool's choices (`warmpool`),
the host's room (`capacity`) and the hypervisor port (`ports`). The glue around it:

- `service`: NATS endpoints (create, destroy, drain, list), libvirt events, the reconcile loop;
  maps refusals to bus errors.
- `fleet`: the commands and the watch on libvirt, over the table.
- `table`: the one table of VMs; applies the changes steps yield and publishes each state.
- `boot`: one VM's clone, boot and readiness wait, as steps that yield changes.
- `warmpool`: a take from the warm pool (retag, resume, check again), likewise.
- `execute`: the blocking libvirt steps of a clone plan, and teardown.
- `libvirt_adapter`: the `Hypervisor` port over libvirt-python; `libvirt_errors`, `libvirt_events`
  and `libvirt_views`: its error mapping (shared with `basevolumes`), event thread and readers.
- `readiness`: the HTTP/3 probe; `room`: the host's figures in time; `identities`: fresh UUIDs
  and MACs; `settings`; `bootstrap`: the composition root.

Arrows go down: service → fleet → table → boot/warmpool → execute → the port; steps never call
back up, they yield.
"""
