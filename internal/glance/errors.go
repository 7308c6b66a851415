package glance

import (
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Glance raises webob.exc errors, and WebOb renders them according to the
// request's Accept header: HTML for */* (what python-glanceclient sends),
// flat JSON for application/json, plain text otherwise. These are WebOb
// 1.8's templates, byte for byte.

// httpError is a WebOb HTTP exception.
type httpError struct {
	code        int
	explanation string
	// detail follows the explanation, as webob's detail (the first
	// positional argument of an HTTP exception).
	detail      string
	template    errorTemplate
	allow       string // the Allow header of a 405
	noRequestID bool   // 401s leave before the request id is set
	headers     map[string]string
}

type errorTemplate int

const (
	// defaultTemplate is "${explanation}<br /><br />\n${detail}\n${html_comment}\n".
	defaultTemplate errorTemplate = iota
	// explanationOnly is body_template='${explanation}' (the DELETE 405).
	explanationOnly
	// methodNotAllowed is HTTPMethodNotAllowed's own template.
	methodNotAllowed
	// unsupportedMediaType is HTTPUnsupportedMediaType's own template; the
	// explanation is the request's media type.
	unsupportedMediaType
)

func newError(code int, explanation string) *httpError {
	return &httpError{code: code, explanation: explanation}
}

// withDetail is an error with WebOb's default explanation of its code and
// a detail: what webob.exc.HTTPForbidden(msg) renders.
func withDetail(code int, detail string) *httpError {
	return &httpError{code: code, explanation: defaultExplanations[code], detail: detail}
}

var defaultExplanations = map[int]string{
	http.StatusForbidden: "Access was denied to this resource.",
	http.StatusConflict:  "There was a conflict when trying to complete your request.",
	http.StatusNotFound:  notFoundText,
}

// WebOb's default explanations.
const (
	unauthorizedText = "This server could not verify that you are authorized to access the document you requested. Either you supplied the wrong credentials (e.g., bad password), or your browser does not understand how to supply the credentials required."
	notFoundText     = "The resource could not be found."
	serverErrorText  = "The server has either erred or is incapable of performing the requested operation."
)

func (e *httpError) status() string { return strconv.Itoa(e.code) + " " + http.StatusText(e.code) }

// body is WebOb's _make_body with an escape function.
func (e *httpError) body(escape func(string) string, method string) string {
	switch e.template {
	case explanationOnly:
		return escape(e.explanation)
	case unsupportedMediaType:
		return "The request media type " + escape(e.explanation) + " is not supported by this server.\n<br /><br />\n"
	case methodNotAllowed:
		return "The method " + escape(method) + " is not allowed for this resource. <br /><br />\n"
	}
	return escape(e.explanation) + "<br /><br />\n" + escape(e.detail) + "\n\n"
}

// write renders the error as WebOb would for the request.
func (e *httpError) write(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	for k, v := range e.headers {
		h.Set(k, v)
	}
	if e.allow != "" {
		h.Set("Allow", e.allow)
	}
	var contentType, body string
	accept := negotiate(r.Header.Values("Accept"))
	switch {
	case r.Method == http.MethodHead:
		// WebOb answers a HEAD with the bare Response it is: its default
		// content type, whatever Accept says, and no body.
		contentType = "text/html; charset=UTF-8"
	case accept == "text/html":
		contentType = "text/html; charset=UTF-8"
		body = "<html>\n <head>\n  <title>" + e.status() + "</title>\n </head>\n <body>\n  <h1>" + e.status() +
			"</h1>\n  " + e.body(htmlEscape, r.Method) + "\n </body>\n</html>"
	case accept == "application/json":
		contentType = "application/json"
		body = string(encodePy(object{
			{"message", e.body(noEscape, r.Method)}, {"code", e.status()}, {"title", http.StatusText(e.code)},
		}, true))
	default:
		contentType = "text/plain; charset=UTF-8"
		body = e.status() + "\n\n" + stripTags(e.body(noEscape, r.Method))
	}
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.code)
	w.Write([]byte(body))
}

func noEscape(s string) string { return s }

// htmlEscape is WebOb's html_escape: Python's html.escape(s, quote=True),
// then what is not ASCII as a decimal character reference
// (encode('ascii', 'xmlcharrefreplace')).
func htmlEscape(s string) string {
	s = htmlEscaper.Replace(s)
	var b strings.Builder
	for _, r := range s {
		if r < utf8.RuneSelf {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "&#%d;", r)
		}
	}
	return b.String()
}

var htmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#x27;")

// stripTags is WebOb's strip_tags: newlines become spaces, <br /> becomes a newline.
func stripTags(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\n", " "), "\r", "")
	return strings.ReplaceAll(s, "<br />", "\n")
}

// negotiate picks text/html or application/json as WebOb's
// acceptable_offers does (highest quality, then that order), or text/plain.
func negotiate(accept []string) string {
	header := strings.TrimSpace(strings.Join(accept, ","))
	if header == "" {
		return "text/plain"
	}
	best, bestQ := "text/plain", 0.0
	for _, offer := range []string{"text/html", "application/json"} {
		if q := quality(header, offer); q > bestQ {
			best, bestQ = offer, q
		}
	}
	return best
}

// quality is the q of the most specific media range in header that
// matches offer.
func quality(header, offer string) float64 {
	offerType, _, _ := strings.Cut(offer, "/")
	q, specificity := 0.0, -1
	for _, part := range strings.Split(header, ",") {
		mediaType, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		rangeQ := 1.0
		if v, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				rangeQ = f
			}
		}
		t, _, _ := strings.Cut(mediaType, "/")
		spec := -1
		switch {
		case mediaType == offer:
			spec = 2
		case mediaType == t+"/*" && t == offerType:
			spec = 1
		case mediaType == "*/*":
			spec = 0
		}
		if spec > specificity {
			q, specificity = rangeQ, spec
		}
	}
	return q
}
