# The decision Cordon enforces: data.cordon.main.decision (contract: policies/README.md).
# It assembles the other packages: who may use which model (access), where the request may go
# (residency), what DLP does on that route (dlp), the max_tokens cap (limits) and the office
# hours restriction (hours).
package cordon.main

import data.cordon.access
import data.cordon.dlp
import data.cordon.hours
import data.cordon.limits
import data.cordon.residency

deny_reasons := (access.deny | residency.deny) | hours.deny

unauthenticated contains {
	"code": "unauthenticated",
	"message": "the caller is not authenticated",
	"rule": "main.authenticated",
} if not input.user.authenticated

all_deny := deny_reasons | unauthenticated

allow if count(all_deny) == 0

# Written without `else`: regorus's VM (0.14.1) leaves an else-chained rule undefined when the
# first body fails on an undefined reference.
default route_target := "hosted"

route_target := "private" if residency.private

full_log if input.user.team in data.tables.audit.full_log_teams

default log_level := "metadata"

log_level := "full" if full_log

log_level := "masked" if {
	not full_log
	count(input.dlp.findings) > 0
}

default retain_prompt := false

retain_prompt if input.user.team in data.tables.audit.retain_prompt_teams

default alert := false

alert if count(residency.secrets) > 0

alert if not allow

obligations := {
	"log_level": log_level,
	"retain_prompt": retain_prompt,
	"max_tokens_cap": limits.cap,
	"alert": alert,
}

decision := {
	"allow": true,
	"reasons": [r | some r in residency.reasons],
	"route": {"target": route_target},
	"dlp_actions": dlp.actions[route_target],
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
