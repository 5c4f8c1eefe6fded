# Inputs shared by the bundle's tests: a well-formed cordon.input/v1 document and variations.
package cordon.fixtures_test

base := {
	"schema": "cordon.input/v1",
	"request_id": "0190a5b4-0000-7000-8000-000000000001",
	"time": {"unix_ms": 1795000000000, "rfc3339": "2026-11-18T10:00:00Z", "hour": 10, "minute": 0, "weekday": "wednesday"},
	"source": {"ip": "10.0.0.7", "mtls_principal": null},
	"user": {
		"authenticated": true, "id": "alice", "auth_method": "api_key", "api_key_id": "key_1",
		"team": "payments", "groups": ["staff"], "roles": [], "attributes": {},
	},
	"request": {
		"api": "chat", "model": "gpt-4o-mini", "model_route": "hosted", "stream": false, "max_tokens": null,
		"tools": [], "messages": {"count": 1, "roles": ["user"]}, "characters": 42,
		"estimated_tokens": 11, "headers": {},
	},
	"dlp": {"scanned": true, "complete": true, "findings": []},
	"usage": {"key_requests_this_minute": 1},
	"route_health": {"private": true, "hosted": true},
	"mode": "enforce",
}

finding(t, severity) := {"entity_type": t, "count": 1, "max_confidence": 0.99, "severity": severity, "locations": ["messages[0].content"]}

with_findings(fs) := object.union(base, {"dlp": {"scanned": true, "complete": true, "findings": fs}})

with_user(u) := object.union(base, {"user": object.union(base.user, u)})

with_request(r) := object.union(base, {"request": object.union(base.request, r)})
