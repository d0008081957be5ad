"""Teams (DESIGN §12): users with personal API tokens, projects with members and roles, and the
one table of what each role may do (policy.py). No database or web code here: the store
(store/teams.py) keeps the records, the API (api/access.py) asks the policy."""
