package cordon.hours_test

import data.cordon.fixtures_test as fx
import data.cordon.hours

contractor(time) := object.union(fx.with_user({"groups": ["contractors"]}), {"time": object.union(fx.base.time, time)})

test_contractors_in_office_hours if {
	count(hours.deny) == 0 with input as contractor({"hour": 7, "weekday": "monday"})
	count(hours.deny) == 0 with input as contractor({"hour": 18, "weekday": "friday"})
}

test_contractors_outside_office_hours if {
	some r in hours.deny with input as contractor({"hour": 19, "weekday": "monday"})
	r.code == "outside_office_hours"
	count(hours.deny) == 1 with input as contractor({"hour": 10, "weekday": "saturday"})
	count(hours.deny) == 1 with input as contractor({"hour": 6, "weekday": "tuesday"})
}

test_staff_any_time if {
	count(hours.deny) == 0 with input as object.union(fx.base, {"time": object.union(fx.base.time, {"hour": 3, "weekday": "sunday"})})
}
