"""Routing: which backend answers a request, what it costs and what was spent.

Model (pure): `table` (effort ranges, tiers, candidates), `cost`, `request_cost`, the effort
scorers (`effort`, `effort_model`, `effort_features`, `effort_heuristic`, `effort_weights`) and
`run_report`. I/O: `chat` (the chat client), `probes` (is a backend worth trying), `ledger`,
`static_embedding`, `gateway_client`. Operations: `router` (`aitherctl run`), `usage`, `grader`."""
