"""Who runs next on a shared cluster (issue 30, DESIGN §12): priorities, project quotas, fair
share between projects and preemption.

- `priority.py`: the named priority levels;
- `policy.py`: the decision of one pass, pure (no Ray, no database): which waiting jobs are
  offered to Ray now, why each other one waits, and which running jobs are preempted;
- `usage.py`: each project's decayed use of the cluster, pure;
- `queue.py`: the controller's side: gathers the facts, runs the policy, carries out its decision
  through the store, and keeps the last decision for `GET /v1/queue`;
- `models.py`: the API's bodies (quotas, the queue).

Ray's placement stays the mechanism: the controller only decides which job it offers to Ray next.
"""
