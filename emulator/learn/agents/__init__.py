"""Learning agents, one readable file each: flow (ours), gaussian (ablation), ppo (baseline).

Every module has the same functions (init, act, learn, behaviour_clone, policy_params,
with_policy_params) and a typed `Config` with CPU defaults and a `Config.gpu()` preset; the
trainer calls them alike.
"""
