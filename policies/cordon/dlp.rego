# DLP actions per route, from data.tables.dlp. Hosted: personal data is pseudonymised (restored
# in the answer) and secrets are blocked. Private: personal data is allowed and secrets are
# redacted. Entity types not named here keep the gateway's [dlp.actions].
#
# The tables are bound in the rule body, not referenced inside the comprehension: regorus's VM
# (0.14.1) leaves an object comprehension undefined when it iterates over nothing and its value
# is a data reference.
package cordon.dlp

is_secret(t) if startswith(t, "SECRET_")

is_secret(t) if t == "URL_CREDENTIALS"

personal contains f.entity_type if {
	some f in input.dlp.findings
	not is_secret(f.entity_type)
}

hosted := object.union({t: a | some t in personal}, {"SECRET_*": s, "URL_CREDENTIALS": s}) if {
	a := data.tables.dlp.hosted.personal
	s := data.tables.dlp.hosted.secrets
}

private := object.union({t: a | some t in personal}, {"SECRET_*": s, "URL_CREDENTIALS": s}) if {
	a := data.tables.dlp.private.personal
	s := data.tables.dlp.private.secrets
}
