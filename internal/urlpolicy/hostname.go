package urlpolicy

import (
	"errors"
	"strings"

	"golang.org/x/net/idna"
)

// canonicalHost turns a URL's host name into what the HTTP client looks up,
// and the key the name lists compare.
//
// url.Parse has already decoded percent-escapes in the host (it accepts them
// only for non-ASCII bytes, so "local%68ost" is no URL at all, but
// "%EF%BD%8Cocalhost" is U+FF4C, a fullwidth l, and then "ocalhost").
// net/http maps a non-ASCII host with IDNA's lookup profile (UTS #46) before
// it resolves it, so a fullwidth "ｌocalhost" dials localhost and
// "１２７.０.０.１" dials 127.0.0.1; the name lists must see the same
// mapping, or any such spelling walks past --disallowed-hosts. An ASCII host
// is taken as it is, case aside, as net/http does (IDNA's STD3 rules would
// refuse an underscore that DNS allows). A trailing dot names the same host
// ("localhost." is localhost) but is kept in dial: without it the resolver
// may try search domains first.
func canonicalHost(host string) (dial, key string, err error) {
	dial = strings.ToLower(host)
	if !isASCII(host) {
		if dial, err = idna.Lookup.ToASCII(host); err != nil {
			return "", "", errors.New("not a valid international host name")
		}
		dial = strings.ToLower(dial)
	}
	key = strings.TrimSuffix(dial, ".")
	if key == "" || hasEmptyLabel(key) {
		return "", "", errors.New("an empty label")
	}
	return dial, key, nil
}

// normalizeName is the key a name-list entry is compared by.
func normalizeName(name string) (string, error) {
	_, key, err := canonicalHost(name)
	return key, err
}

func hasEmptyLabel(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".") || strings.Contains(name, "..")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
