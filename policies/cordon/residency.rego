# Data residency: what must not leave the premises. A request goes to the private (on-prem)
# route when DLP found a high-sensitivity entity type, when the caller's department is one that
# keeps its data on-prem, when the client marks the request with a classification header, or
# when the requested model is itself on-prem. Secrets never go to a hosted provider.
package cordon.residency

sensitive contains f.entity_type if {
	some f in input.dlp.findings
	f.entity_type in data.tables.residency.private_entities
}

secrets contains f.entity_type if {
	some f in input.dlp.findings
	data.cordon.dlp.is_secret(f.entity_type)
}

department := object.get(input.user.attributes, "department", input.user.team)

classification := object.get(input.request.headers, "x-cordon-classification", "")

reasons contains {
	"code": "residency_entities",
	"message": sprintf("the request contains %v, which stays on-prem", [concat(", ", sort(sensitive))]),
	"rule": "residency.private_entities",
} if count(sensitive) > 0

reasons contains {
	"code": "residency_department",
	"message": sprintf("department %v keeps its data on-prem", [department]),
	"rule": "residency.private_departments",
} if department in data.tables.residency.private_departments

reasons contains {
	"code": "residency_classification",
	"message": sprintf("the request is classified %v", [classification]),
	"rule": "residency.private_classifications",
} if classification in data.tables.residency.private_classifications

reasons contains {
	"code": "model_on_prem",
	"message": sprintf("model %v is served on-prem", [input.request.model]),
	"rule": "residency.model_route",
} if input.request.model_route == "private"

private if count(reasons) > 0

deny contains {
	"code": "secret_in_prompt",
	"message": sprintf("the request contains secrets (%v); remove them and send it again", [concat(", ", sort(secrets))]),
	"rule": "residency.secrets_block",
} if {
	count(secrets) > 0
	not private
}
