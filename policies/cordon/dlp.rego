# DLP actions per route. Hosted: personal data is pseudonymised (restored in the answer) and
# secrets are blocked. Private: personal data is allowed and secrets are redacted. Entity types
# not named here keep the gateway's [dlp.actions].
package cordon.dlp

is_secret(t) if startswith(t, "SECRET_")

is_secret(t) if t == "URL_CREDENTIALS"

found contains f.entity_type if some f in input.dlp.findings

hosted := object.union(
	{t: "pseudonymise" | some t in found; not is_secret(t)},
	{"SECRET_*": "block", "URL_CREDENTIALS": "block"},
)

private := object.union(
	{t: "allow" | some t in found; not is_secret(t)},
	{"SECRET_*": "redact", "URL_CREDENTIALS": "redact"},
)

actions := {"hosted": hosted, "private": private}
