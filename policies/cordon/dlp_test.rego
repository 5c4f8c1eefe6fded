package cordon.dlp_test

import data.cordon.dlp
import data.cordon.fixtures_test as fx

test_hosted_actions if {
	a := dlp.hosted with input as fx.with_findings([fx.finding("PHONE_NUMBER", "medium"), fx.finding("SECRET_JWT", "high")])
	a == {"PHONE_NUMBER": "pseudonymise", "SECRET_*": "block", "URL_CREDENTIALS": "block"}
}

test_private_actions if {
	a := dlp.private with input as fx.with_findings([fx.finding("CREDIT_CARD", "high"), fx.finding("URL_CREDENTIALS", "high")])
	a == {"CREDIT_CARD": "allow", "SECRET_*": "redact", "URL_CREDENTIALS": "redact"}
}
