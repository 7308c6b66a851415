package glance

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
)

// Glance validates a POST /v2/tasks body against the task schema with
// additionalProperties false (glance.schema.Schema.raw()), through
// jsonschema.validate: every key it knows must be of its schema's type,
// even the read-only ones it then drops (id, status, owner, result, dates),
// and no other key is allowed. jsonschema reports the best match of all
// the errors it finds (exceptions.best_match): an error about the whole
// body beats one about a property, and among those an error on a value of
// the wrong type beats one on a value of the right type; ties go to the
// first found, in the schema's property order. This mirrors jsonschema
// 4.10 (Debian's, under Glance 25.1.0) for the keywords the task schema
// uses: type, enum and pattern.

// taskProperties are the task schema's properties, in Glance's order.
var taskProperties = func() object {
	doc, err := parseOrdered([]byte(taskSchema))
	if err != nil {
		panic(err)
	}
	props, _ := doc.(object).get("properties")
	return props.(object)
}()

// taskSchemaRaw is Schema('task', properties).raw().
var taskSchemaRaw = object{{"name", "task"}, {"properties", taskProperties}, {"additionalProperties", false}}

// validationError is a jsonschema ValidationError.
type validationError struct {
	message   string
	validator string
	property  string // "" for an error about the whole body
	// additional: the property is checked by additionalProperties.
	additional bool
	schema     any
	instance   any
}

// validateTask returns Glance's 400 for a body the task schema refuses.
func validateTask(body object) *httpError {
	e := firstSchemaError(body)
	if e == nil {
		return nil
	}
	return newError(http.StatusBadRequest, "Provided object does not match schema 'task': "+e.String())
}

func firstSchemaError(body object) *validationError {
	var extras []string
	for _, m := range body {
		if _, known := taskProperties.get(m.key); !known {
			extras = append(extras, m.key)
		}
	}
	if len(extras) > 0 {
		// jsonschema lists them from a set, in an order that changes with
		// Python's hash seed; sorted here.
		slices.Sort(extras)
		reprs := make([]string, len(extras))
		for i, k := range extras {
			reprs[i] = pyReprString(k)
		}
		verb := "was"
		if len(extras) > 1 {
			verb = "were"
		}
		return &validationError{
			message:   fmt.Sprintf("Additional properties are not allowed (%s %s unexpected)", strings.Join(reprs, ", "), verb),
			validator: "additionalProperties", schema: taskSchemaRaw, instance: body,
		}
	}
	var best *validationError
	for _, prop := range taskProperties {
		instance, present := body.get(prop.key)
		if !present {
			continue
		}
		schema := prop.value.(object)
		for _, keyword := range schema {
			msg := check(keyword, instance)
			if msg == "" {
				continue
			}
			e := &validationError{message: msg, validator: keyword.key, property: prop.key, schema: schema, instance: instance}
			if !matchesType(schema, instance) {
				return e // nothing found later is more relevant
			}
			if best == nil {
				best = e
			}
		}
	}
	return best
}

// check applies one schema keyword to a value and returns jsonschema's
// message when it fails.
func check(keyword member, instance any) string {
	switch keyword.key {
	case "type":
		var types []any
		switch t := keyword.value.(type) {
		case string:
			types = []any{t}
		case []any:
			types = t
		}
		for _, t := range types {
			if isType(instance, t.(string)) {
				return ""
			}
		}
		reprs := make([]string, len(types))
		for i, t := range types {
			reprs[i] = pyRepr(t)
		}
		return fmt.Sprintf("%s is not of type %s", pyRepr(instance), strings.Join(reprs, ", "))
	case "enum":
		s, isString := instance.(string)
		if isString && slices.Contains(keyword.value.([]any), any(s)) {
			return "" // the task schema's enums are all strings
		}
		return fmt.Sprintf("%s is not one of %s", pyRepr(instance), pyRepr(keyword.value))
	case "pattern":
		s, isString := instance.(string)
		pattern := keyword.value.(string)
		if !isString || schemaPatterns[pattern].MatchString(s) {
			return ""
		}
		return fmt.Sprintf("%s does not match %s", pyRepr(s), pyRepr(pattern))
	}
	return "" // description, readOnly
}

// matchesType is ValidationError._matches_type: whether the value is of a
// type its schema names.
func matchesType(schema object, instance any) bool {
	types, ok := schema.get("type")
	if !ok {
		return false
	}
	if t, ok := types.(string); ok {
		return isType(instance, t)
	}
	for _, t := range types.([]any) {
		if isType(instance, t.(string)) {
			return true
		}
	}
	return false
}

func isType(v any, t string) bool {
	switch t {
	case "string":
		_, ok := v.(string)
		return ok
	case "object":
		_, ok := v.(object)
		return ok
	case "null":
		return v == nil
	}
	return false
}

// schemaPatterns are the task schema's patterns, compiled for re.search:
// Python's $ also matches before a final line end.
var schemaPatterns = func() map[string]*regexp.Regexp {
	out := map[string]*regexp.Regexp{}
	for _, prop := range taskProperties {
		if p, ok := prop.value.(object).get("pattern"); ok {
			out[p.(string)] = schemaPatternOf(p.(string))
		}
	}
	return out
}()

// schemaPatternOf compiles a schema pattern for re.search: Python's $ also
// matches before a final line end.
func schemaPatternOf(p string) *regexp.Regexp {
	return regexp.MustCompile(strings.TrimSuffix(p, "$") + `\n?\z`)
}

// String is str(ValidationError): the message, then the schema and the
// instance as pprint writes them, each line indented by four spaces.
func (e *validationError) String() string {
	schemaPath, instancePath := "schema", "instance"
	if e.property != "" {
		schemaPath = "schema['properties'][" + pyReprString(e.property) + "]"
		if e.additional {
			schemaPath = "schema['additionalProperties']"
		}
		instancePath = "instance[" + pyReprString(e.property) + "]"
	}
	indent := func(s string) string { return "    " + strings.ReplaceAll(s, "\n", "\n    ") }
	return e.message + "\n\nFailed validating " + pyReprString(e.validator) + " in " + schemaPath + ":\n" +
		indent(pformat(e.schema, 72)) + "\n\nOn " + instancePath + ":\n" + indent(pformat(e.instance, 72))
}
