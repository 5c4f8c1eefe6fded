package cordon.access_test

import data.cordon.access
import data.cordon.fixtures_test as fx

test_open_models_are_permitted if {
	access.permitted with input as fx.base
	count(access.deny) == 0 with input as fx.base
}

test_restricted_model_needs_group_or_team if {
	inp := fx.with_request({"model": "gpt-4o"})
	not access.permitted with input as inp
	some r in access.deny with input as inp
	r.code == "model_not_permitted"
}

test_restricted_model_by_group if {
	inp := object.union(fx.with_request({"model": "gpt-4o"}), {"user": object.union(fx.base.user, {"groups": ["staff", "llm-premium"]})})
	access.permitted with input as inp
}

test_restricted_model_by_team if {
	inp := object.union(fx.with_request({"model": "o1"}), {"user": object.union(fx.base.user, {"team": "research"})})
	access.permitted with input as inp
}

test_restricted_model_wrong_team if {
	inp := object.union(fx.with_request({"model": "claude-opus"}), {"user": object.union(fx.base.user, {"team": "research"})})
	not access.permitted with input as inp
}

test_blocked_team if {
	some r in access.deny with input as fx.with_user({"team": "interns-sandbox"})
	r.code == "team_blocked"
}
