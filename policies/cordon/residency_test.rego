package cordon.residency_test

import data.cordon.fixtures_test as fx
import data.cordon.residency

test_nothing_sensitive_stays_hosted if {
	not residency.private with input as fx.with_findings([fx.finding("EMAIL_ADDRESS", "medium")])
}

test_each_high_sensitivity_type_goes_private if {
	every t in data.tables.residency.private_entities {
		residency.private with input as fx.with_findings([fx.finding(t, "high")])
	}
}

test_department_attribute_goes_private if {
	residency.private with input as fx.with_user({"attributes": {"department": "hr"}})
}

test_team_as_department_goes_private if {
	residency.private with input as fx.with_user({"team": "legal"})
}

test_classification_header_goes_private if {
	residency.private with input as fx.with_request({"headers": {"x-cordon-classification": "restricted"}})
	not residency.private with input as fx.with_request({"headers": {"x-cordon-classification": "public"}})
}

test_on_prem_model_is_private if {
	residency.private with input as fx.with_request({"model": "private-chat", "model_route": "private"})
}

test_secrets_deny_only_when_hosted if {
	inp := fx.with_findings([fx.finding("SECRET_OPENAI_API_KEY", "critical")])
	some r in residency.deny with input as inp
	r.code == "secret_in_prompt"
	count(residency.deny) == 0 with input as object.union(inp, {"user": object.union(fx.base.user, {"team": "risk"})})
}

test_url_credentials_are_secrets if {
	residency.secrets == {"URL_CREDENTIALS"} with input as fx.with_findings([fx.finding("URL_CREDENTIALS", "high")])
}
