package cordon.limits_test

import data.cordon.fixtures_test as fx
import data.cordon.limits

test_default_cap if {
	limits.cap == 4096 with input as fx.base
}

test_team_cap if {
	limits.cap == 1024 with input as fx.with_user({"team": "interns"})
	limits.cap == 16384 with input as fx.with_user({"team": "research"})
}

test_no_team if {
	limits.cap == 4096 with input as fx.with_user({"team": null})
}
