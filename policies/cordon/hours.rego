# An example restriction by group and time of day: contractors may use the gateway only on
# weekdays between start_hour_utc and end_hour_utc (UTC, from input.time).
package cordon.hours

restricted if {
	some g in input.user.groups
	g in data.tables.hours.restricted_groups
}

restricted if input.user.team in data.tables.hours.restricted_teams

office_hours if {
	input.time.weekday in data.tables.hours.weekdays
	input.time.hour >= data.tables.hours.start_hour_utc
	input.time.hour < data.tables.hours.end_hour_utc
}

deny contains {
	"code": "outside_office_hours",
	"message": sprintf("your group may use the gateway on weekdays from %v:00 to %v:00 UTC", [data.tables.hours.start_hour_utc, data.tables.hours.end_hour_utc]),
	"rule": "hours.office_hours",
} if {
	restricted
	not office_hours
}
