# The decision Cordon enforces: data.cordon.main.decision (contract: policies/README.md).
# It assembles the other packages: who may use which model (access), where the request may go
# (residency), what DLP does on that route (dlp), the max_tokens cap (limits) and the office
# hours restriction (hours).
package cordon.main

# The other packages are referenced by full path, not through `import`: regorus's VM (0.14.1)
# evaluates a whole imported package to read one rule from it, which made decisions 4x slower.


unauthenticated contains {
	"code": "unauthenticated",
	"message": "the caller is not authenticated",
	"rule": "main.authenticated",
} if not input.user.authenticated

all_deny := ((data.cordon.access.deny | data.cordon.residency.deny) | data.cordon.hours.deny) | unauthenticated

allow if count(all_deny) == 0

# Written without `else`: regorus's VM (0.14.1) leaves an else-chained rule undefined when the
# first body fails on an undefined reference.
default route_target := "hosted"

route_target := "private" if data.cordon.residency.private

full_log if input.user.team in data.tables.audit.full_log_teams

dlp_actions := data.cordon.dlp.private if route_target == "private"

dlp_actions := data.cordon.dlp.hosted if route_target == "hosted"

default log_level := "metadata"

log_level := "full" if full_log

log_level := "masked" if {
	not full_log
	count(input.dlp.findings) > 0
}

default retain_prompt := false

retain_prompt if input.user.team in data.tables.audit.retain_prompt_teams

default alert := false

alert if count(data.cordon.residency.secrets) > 0

alert if not allow

obligations := {
	"log_level": log_level,
	"retain_prompt": retain_prompt,
	"max_tokens_cap": data.cordon.limits.cap,
	"alert": alert,
}

decision := {
	"allow": true,
	"reasons": [r | some r in data.cordon.residency.reasons],
	"route": {"target": route_target},
	"dlp_actions": dlp_actions,
	"obligations": obligations,
} if allow

decision := {
	"allow": false,
	"reasons": reasons,
	"response": {"status": 403, "message": concat("; ", [r.message | some r in reasons])},
	"obligations": obligations,
} if {
	not allow
	reasons := [r | some r in all_deny]
}
