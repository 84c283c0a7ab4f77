"""Planning: host facts in, a tuning plan out (settings with reasons, instances, the run record),
and how that plan is rendered (env files) and launched (exec). Every topology-to-settings rule
lives in planning.plan."""
