package cordon.main_test

import data.cordon.fixtures_test as fx
import data.cordon.main

test_plain_request_is_allowed_on_the_hosted_route if {
	d := main.decision with input as fx.base
	d.allow == true
	d.route.target == "hosted"
	d.reasons == []
	d.obligations.log_level == "metadata"
	d.obligations.max_tokens_cap == 4096
	d.obligations.alert == false
}

test_personal_data_is_pseudonymised_on_the_hosted_route if {
	d := main.decision with input as fx.with_findings([fx.finding("EMAIL_ADDRESS", "medium")])
	d.allow
	d.route.target == "hosted"
	d.dlp_actions.EMAIL_ADDRESS == "pseudonymise"
	d.dlp_actions["SECRET_*"] == "block"
	d.obligations.log_level == "masked"
}

test_a_resident_id_goes_private_and_is_allowed_there if {
	d := main.decision with input as fx.with_findings([fx.finding("CN_RESIDENT_ID", "high"), fx.finding("EMAIL_ADDRESS", "medium")])
	d.allow
	d.route.target == "private"
	d.dlp_actions.CN_RESIDENT_ID == "allow"
	d.dlp_actions.EMAIL_ADDRESS == "allow"
	d.dlp_actions["SECRET_*"] == "redact"
	some r in d.reasons
	r.code == "residency_entities"
}

test_secrets_deny_on_the_hosted_route if {
	d := main.decision with input as fx.with_findings([fx.finding("SECRET_GITHUB_TOKEN", "critical")])
	d.allow == false
	d.response.status == 403
	contains(d.response.message, "SECRET_GITHUB_TOKEN")
	d.obligations.alert == true
	[r.code | some r in d.reasons] == ["secret_in_prompt"]
}

test_secrets_are_redacted_on_the_private_route if {
	inp := object.union(
		fx.with_findings([fx.finding("SECRET_AWS_ACCESS_KEY", "critical")]),
		{"request": object.union(fx.base.request, {"headers": {"x-cordon-classification": "confidential"}})},
	)
	d := main.decision with input as inp
	d.allow
	d.route.target == "private"
	d.dlp_actions["SECRET_*"] == "redact"
	d.obligations.alert == true
}

test_unauthenticated_is_denied if {
	d := main.decision with input as fx.with_user({"authenticated": false})
	d.allow == false
	some r in d.reasons
	r.code == "unauthenticated"
}

test_several_denials_are_all_reported if {
	inp := object.union(fx.with_findings([fx.finding("SECRET_SLACK_TOKEN", "critical")]), {"user": object.union(fx.base.user, {"team": "interns-sandbox"})})
	d := main.decision with input as inp
	d.allow == false
	codes := {r.code | some r in d.reasons}
	codes == {"secret_in_prompt", "team_blocked"}
}

test_retained_and_full_log_teams if {
	d := main.decision with input as fx.with_user({"team": "fraud-investigations"})
	d.obligations.retain_prompt == true
	d2 := main.decision with input as fx.with_user({"team": "ops"}) with data.tables.audit.full_log_teams as ["ops"]
	d2.obligations.log_level == "full"
}

test_the_decision_is_always_defined if {
	main.decision with input as {}
}
