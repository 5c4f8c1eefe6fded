# Model access by group and team. A model listed in data.tables.model_access.restricted_models
# may be used only by members of its groups or teams; every other catalogue model is open to
# every authenticated caller (the API key's own model list still applies in the gateway).
package cordon.access

restricted := data.tables.model_access.restricted_models[input.request.model]

default permitted := false

permitted if not restricted

permitted if {
	some g in input.user.groups
	g in restricted.groups
}

permitted if input.user.team in restricted.teams

deny contains {
	"code": "model_not_permitted",
	"message": sprintf("model %v is restricted to groups %v and teams %v", [input.request.model, restricted.groups, restricted.teams]),
	"rule": "access.restricted_models",
} if not permitted

deny contains {
	"code": "team_blocked",
	"message": sprintf("team %v may not use the LLM gateway", [input.user.team]),
	"rule": "access.blocked_teams",
} if input.user.team in data.tables.model_access.blocked_teams
