package glance

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"
)

// The image schemas of the Glance the shim is held to (Debian's glance-api
// 25.1.0, with Debian's /etc/glance/schema-image.json), byte for byte, as
// GET /v2/schemas/image and /v2/schemas/images answered
// (hack/glance/capture-image-transcripts.sh records them).
var (
	//go:embed schemas/image.json
	imageSchema string
	//go:embed schemas/images.json
	imagesSchema string
)

// imageProperties are the image schema's properties, in Glance's order.
var imageProperties = func() object {
	doc, err := parseOrdered([]byte(imageSchema))
	if err != nil {
		panic(err)
	}
	props, _ := doc.(object).get("properties")
	return props.(object)
}()

// additionalSchema is the image schema's additionalProperties.
var additionalSchema = object{{"type", "string"}}

// validateImage checks an image (a POST body, or the part of one a PATCH
// changes) against the image schema as Glance's PermissiveSchema does:
// known properties against their schemas, any other must be a string.
// jsonschema's best match wins: an error on a value of the wrong type
// first, else the first error found, properties before the others.
func validateImage(body object) *httpError {
	var best *validationError
	for _, prop := range imageProperties {
		instance, present := body.get(prop.key)
		if !present {
			continue
		}
		schema := prop.value.(object)
		for _, keyword := range schema {
			msg := checkImage(keyword, instance)
			if msg == "" {
				continue
			}
			e := &validationError{message: msg, validator: keyword.key, property: prop.key, schema: schema, instance: instance}
			if !matchesImageType(schema, instance) {
				return imageSchemaError(e)
			}
			if best == nil {
				best = e
			}
		}
	}
	for _, m := range body {
		if _, known := imageProperties.get(m.key); known {
			continue
		}
		if _, ok := m.value.(string); !ok {
			return imageSchemaError(&validationError{message: fmt.Sprintf("%s is not of type 'string'", pyRepr(m.value)),
				validator: "type", property: m.key, additional: true, schema: additionalSchema, instance: m.value})
		}
	}
	if best != nil {
		return imageSchemaError(best)
	}
	return nil
}

func imageSchemaError(e *validationError) *httpError {
	return newError(http.StatusBadRequest, "Provided object does not match schema 'image': "+e.String())
}

// checkImage is check for the keywords of the image schema.
func checkImage(keyword member, instance any) string {
	switch keyword.key {
	case "type":
		for _, t := range typeList(keyword.value) {
			if isImageType(instance, t) {
				return ""
			}
		}
		return check(keyword, instance)
	case "enum":
		for _, v := range keyword.value.([]any) {
			if v == nil && instance == nil {
				return ""
			}
			if s, ok := instance.(string); ok && v == s {
				return ""
			}
		}
		return fmt.Sprintf("%s is not one of %s", pyRepr(instance), pyRepr(keyword.value))
	case "maxLength":
		s, ok := instance.(string)
		n, _ := keyword.value.(json.Number).Int64()
		if ok && int64(utf8.RuneCountInString(s)) > n {
			return pyRepr(s) + " is too long"
		}
		return ""
	case "items":
		return "" // tags' items: checked by checkTags
	case "pattern":
		s, ok := instance.(string)
		if !ok {
			return ""
		}
		if !uuidPattern.MatchString(s) {
			return fmt.Sprintf("%s does not match %s", pyRepr(s), pyRepr(keyword.value))
		}
		return ""
	}
	return ""
}

func typeList(v any) []string {
	switch t := v.(type) {
	case string:
		return []string{t}
	case []any:
		out := make([]string, len(t))
		for i, x := range t {
			out[i] = x.(string)
		}
		return out
	}
	return nil
}

func matchesImageType(schema object, instance any) bool {
	types, ok := schema.get("type")
	return ok && slices.ContainsFunc(typeList(types), func(t string) bool { return isImageType(instance, t) })
}

func isImageType(v any, t string) bool {
	switch t {
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		return ok && !strings.ContainsAny(string(n), ".eE")
	case "array":
		_, ok := v.([]any)
		return ok
	}
	return isType(v, t)
}

// uuidPattern is the schema's id pattern as Python's re.search reads it.
var uuidPattern = schemaPatternOf(`^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$`)
