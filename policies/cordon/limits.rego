# The max_tokens cap: the gateway lowers (or sets) max_tokens to it. Per team, else the default.
package cordon.limits

team := object.get(input, ["user", "team"], null)

cap := object.get(data.tables.limits.team_caps, team, data.tables.limits.max_tokens_cap)
