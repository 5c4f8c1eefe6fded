# The max_tokens cap: the gateway lowers (or sets) max_tokens to it. Per team, else the default.
package cordon.limits

# Named field by field rather than object.get(input, ...): a policy that reads `input` whole
# turns the decision cache off (policies/README.md).
default team := null

team := input.user.team

cap := object.get(data.tables.limits.team_caps, team, data.tables.limits.max_tokens_cap)
