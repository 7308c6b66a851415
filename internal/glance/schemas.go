package glance

import (
	"net/http"
	"strings"
)

// The schema documents of Glance's tasks API (Zed, as deployed by Debian's
// glance-api, which the compatibility diff runs): Schema.minimal() and
// CollectionSchema.minimal(), byte for byte. python-glanceclient validates
// every task it reads against taskSchema, so the views never contradict it.
const (
	taskSchema  = `{"name": "task", "properties": {"id": {"description": "An identifier for the task", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$", "type": "string"}, "type": {"description": "The type of task represented by this content", "enum": ["import", "api_image_import"], "type": "string"}, "status": {"description": "The current status of this task", "enum": ["pending", "processing", "success", "failure"], "type": "string"}, "input": {"description": "The parameters required by task, JSON blob", "type": ["null", "object"]}, "result": {"description": "The result of current task, JSON blob", "type": ["null", "object"]}, "owner": {"description": "An identifier for the owner of this task", "type": "string"}, "message": {"description": "Human-readable informative message only included when appropriate (usually on failure)", "type": "string"}, "image_id": {"description": "Image associated with the task", "type": "string"}, "request_id": {"description": "Human-readable informative request-id", "type": "string"}, "user_id": {"description": "User associated with the task", "type": "string"}, "expires_at": {"description": "Datetime when this resource would be subject to removal", "type": ["null", "string"]}, "created_at": {"description": "Datetime when this resource was created", "type": "string"}, "updated_at": {"description": "Datetime when this resource was updated", "type": "string"}, "self": {"readOnly": true, "type": "string"}, "schema": {"readOnly": true, "type": "string"}}}`
	tasksSchema = `{"name": "tasks", "properties": {"tasks": {"type": "array", "items": {"name": "task", "properties": {"id": {"description": "An identifier for the task", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$", "type": "string"}, "type": {"description": "The type of task represented by this content", "enum": ["import", "api_image_import"], "type": "string"}, "status": {"description": "The current status of this task", "enum": ["pending", "processing", "success", "failure"], "type": "string"}, "owner": {"description": "An identifier for the owner of this task", "type": "string"}, "image_id": {"description": "Image associated with the task", "type": "string"}, "request_id": {"description": "Human-readable informative request-id", "type": "string"}, "user_id": {"description": "User associated with the task", "type": "string"}, "expires_at": {"description": "Datetime when this resource would be subject to removal", "type": ["null", "string"]}, "created_at": {"description": "Datetime when this resource was created", "type": "string"}, "updated_at": {"description": "Datetime when this resource was updated", "type": "string"}, "self": {"readOnly": true, "type": "string"}, "schema": {"readOnly": true, "type": "string"}}}}, "schema": {"type": "string"}}, "links": [{"rel": "describedby", "href": "{schema}"}]}`
)

// versions is Glance's version document: GET / answers it with 300, GET
// /versions with 200. Clients (gophercloud, openstacksdk) discover the v2
// endpoint from it.
func versions(r *http.Request) []byte {
	href := requestBase(r) + "/v2/"
	ids := []string{"v2.16", "v2.15", "v2.14", "v2.9", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0"}
	list := make([]any, len(ids))
	for i, id := range ids {
		status := "SUPPORTED"
		if i == 0 {
			status = "CURRENT"
		}
		list[i] = object{{"id", id}, {"status", status}, {"links", []any{object{{"rel", "self"}, {"href", href}}}}}
	}
	return encodePy(object{{"versions", list}}, true)
}

// requestBase is scheme://host of the request, as WebOb's host_url.
func requestBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
		scheme = strings.ToLower(p)
	}
	return scheme + "://" + r.Host
}
