package importer

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

// TestFetchDialsTheHostItChecked: the URL policy compares host names in the
// form the HTTP client resolves (IDNA-mapped, case-folded), and the fetcher
// dials exactly that form, for the source and for every redirect.
func TestFetchDialsTheHostItChecked(t *testing.T) {
	body := strings.Repeat("image", 1000)
	var (
		mu   sync.Mutex
		last string // the Host the source last saw
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		last = r.Host
		mu.Unlock()
		if to := r.URL.Query().Get("to"); to != "" {
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		w.Write([]byte(body))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	// Only the name localhost, and 127.0.0.1 where it leads, are allowed.
	cfg := Config{Policy: urlpolicy.Policy{AllowedSchemes: []string{"http"}, AllowedHosts: []string{"localhost", "127.0.0.1"}}}
	for _, url := range []string{
		"http://ＬＯＣＡＬＨＯＳＴ:" + port + "/image",                                   // fullwidth
		"http://LocalHost:" + port + "/image",                                   // case
		"http://%EF%BD%8Cocalhost:" + port + "/image",                           // percent-encoded fullwidth l
		"http://127.0.0.1:" + port + "/?to=http://ｌｏｃａｌｈｏｓｔ:" + port + "/image", // a redirect to a fullwidth name
	} {
		got, err := download(t, cfg, url)
		if err != nil || got.size != int64(len(body)) {
			t.Errorf("%s: %d bytes, %v", url, got.size, err)
			continue
		}
		mu.Lock()
		if last != "localhost:"+port {
			t.Errorf("%s: the source saw Host %q, want localhost:%s", url, last, port)
		}
		mu.Unlock()
	}
}

// TestURLPolicyRefusesBeforeConnecting: spellings of refused names and IPv6
// forms that carry a refused IPv4 address fail the importer's URL check,
// permanently, with the reason, before any connection is tried.
func TestURLPolicyRefusesBeforeConnecting(t *testing.T) {
	deny := urlpolicy.Policy{AllowedSchemes: []string{"http"}, DisallowedHosts: []string{"localhost", "images.internal"}}
	cases := []struct{ url, why string }{
		{"http://ｌocalhost:8080/image", `host "ｌocalhost" (localhost) is disallowed`},
		{"http://ｉｍａｇｅｓ.internal./image", `(images.internal) is disallowed`},
		{"http://１２７.０.０.１/image", "address 127.0.0.1 is loopback"},
		{"http://[64:ff9b::7f00:1]:8080/image", "is NAT64 (well-known prefix, RFC 6052) for 127.0.0.1, which is loopback"},
		{"http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "for 169.254.169.254, which is loopback, link-local"},
		{"http://[64:ff9b:1::a9fe:a9fe]/", "NAT64 (local-use prefix, RFC 8215)"},
		{"http://[::7f00:1]:8080/image", "IPv4-compatible"},
		{"http://[::ffff:0:7f00:1]:8080/image", "IPv4-translated"},
		{"http://[2002:7f00:1::]:8080/image", "6to4 (RFC 3056), carrying 127.0.0.1"},
		{"http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:8080/image", "Teredo (RFC 4380), carrying 127.0.0.1"},
		{"http://[::ffff:169.254.169.254]/", "address 169.254.169.254 is loopback, link-local"},
	}
	for _, tc := range cases {
		cfg := Config{Source: tc.url, SourceFormat: "raw", TargetFormat: "raw", Policy: deny}
		_, _, err := cfg.validate()
		var f *Failure
		if !errors.As(err, &f) {
			t.Errorf("%s passed the URL check (%v); want it refused", tc.url, err)
			continue
		}
		if !f.Permanent || f.Reason != importresult.ReasonURLRefused || !strings.Contains(f.Message, tc.why) {
			t.Errorf("%s: %+v, want a permanent %s saying %q", tc.url, f, importresult.ReasonURLRefused, tc.why)
		}
	}
}
