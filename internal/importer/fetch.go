package importer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imageimport/image-import-operator/internal/importresult"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

const (
	maxRedirects = 10
	maxResumes   = 5
	resumeDelay  = time.Second
)

// fetcher downloads the source: through the URL policy (checked on the
// URL, on every redirect, and on every address dialled), with connect and
// idle timeouts and a minimum transfer rate, resuming with Range requests
// after a dropped connection.
type fetcher struct {
	cfg    *Config
	policy *urlpolicy.Compiled
	client *http.Client
	auth   func(*http.Request)
}

func newFetcher(cfg *Config, policy *urlpolicy.Compiled) (*fetcher, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CABundle != "" {
		pem, err := os.ReadFile(cfg.CABundle)
		if err != nil {
			return nil, permanent(importresult.ReasonInternal, err, "The CA bundle cannot be read: %v.", err)
		}
		tlsConfig.RootCAs = x509.NewCertPool()
		if !tlsConfig.RootCAs.AppendCertsFromPEM(pem) {
			return nil, permanent(importresult.ReasonInternal, nil, "The CA bundle holds no PEM certificate.")
		}
	}
	auth, err := loadCredentials(cfg.CredentialsDir)
	if err != nil {
		return nil, err
	}
	f := &fetcher{cfg: cfg, policy: policy, auth: auth}
	f.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil, // a proxy would connect where the policy cannot see
			DialContext:           policy.DialContext(cfg.ConnectTimeout),
			TLSClientConfig:       tlsConfig,
			TLSHandshakeTimeout:   cfg.ConnectTimeout,
			ResponseHeaderTimeout: cfg.IdleTimeout,
			DisableCompression:    true, // the bytes are the image: no transparent gunzip
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          1,
		},
		CheckRedirect: f.checkRedirect,
	}
	return f, nil
}

// loadCredentials reads a mounted Secret: username and password (basic
// auth) or token (bearer).
func loadCredentials(dir string) (func(*http.Request), error) {
	if dir == "" {
		return func(*http.Request) {}, nil
	}
	read := func(key string) string {
		b, _ := os.ReadFile(filepath.Join(dir, key))
		return strings.TrimSpace(string(b))
	}
	if token := read("token"); token != "" {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) }, nil
	}
	user, pass := read("username"), read("password")
	if user == "" {
		return nil, permanent(importresult.ReasonInternal, nil, "The credentials Secret has neither 'token' nor 'username' and 'password'.")
	}
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }, nil
}

// checkRedirect re-checks every redirect against the policy and drops
// credentials when the redirect leaves the original origin.
func (f *fetcher) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return permanent(importresult.ReasonSourceError, nil, "The source redirected more than %d times.", maxRedirects)
	}
	checked, err := f.policy.CheckURL(req.URL.String())
	if err != nil {
		return permanent(importresult.ReasonURLRefused, err, "Redirect to disallowed URL: %s (%s).", redact(req.URL), detail(err))
	}
	req.URL.Host = checked.Host // the host as checked: IDNA-mapped, as net/http would dial it anyway
	if origin(req.URL) != origin(via[0].URL) {
		req.Header.Del("Authorization")
	}
	return nil
}

func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[strings.ToLower(u.Scheme)]
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// redact drops credentials and the query (presigned URLs carry tokens
// there) from a URL shown to users.
func redact(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.Fragment = nil, "", ""
	return c.String()
}

func detail(err error) string {
	return strings.TrimPrefix(err.Error(), urlpolicy.ErrRefused.Error()+": ")
}

// fetched describes a completed download.
type fetched struct {
	size int64
}

// fetch streams the source into sink, resuming after a dropped connection.
func (f *fetcher) fetch(ctx context.Context, u *url.URL, sink *fanout, track *tracker) (fetched, error) {
	var (
		got       int64
		validator string // ETag or Last-Modified of the first response, for If-Range
		total     int64  = -1
		resumable bool
	)
	for attempt := 0; ; attempt++ {
		resp, watch, err := f.get(ctx, u, got, validator)
		if err != nil {
			return fetched{}, f.classify(ctx, u, err, watch)
		}
		if got == 0 {
			total = resp.ContentLength
			validator = firstNonEmpty(resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"))
			resumable = resp.Header.Get("Accept-Ranges") == "bytes" && validator != ""
			if total > 0 {
				track.total.Store(total)
			}
			if f.cfg.MaxImageSize > 0 && total > f.cfg.MaxImageSize {
				resp.Body.Close()
				return fetched{}, tooLarge(f.cfg.MaxImageSize)
			}
		}
		remaining := int64(-1)
		if f.cfg.MaxImageSize > 0 {
			remaining = f.cfg.MaxImageSize - got
		}
		n, err := sink.ReadFrom(limitReader(resp.Body, remaining))
		resp.Body.Close()
		watch.stop()
		got += n
		var se *sinkError
		switch {
		case errors.As(err, &se):
			return fetched{}, transient(importresult.ReasonInternal, err, "Writing the image failed: %v.", se.err)
		case errors.Is(err, errTooLarge):
			return fetched{}, tooLarge(f.cfg.MaxImageSize)
		case err == nil && (total < 0 || got == total):
			return fetched{size: got}, nil
		case err == nil:
			err = fmt.Errorf("the connection closed after %d of %d bytes", got, total)
		}
		if !resumable || attempt >= maxResumes || ctx.Err() != nil || watch.fired() {
			return fetched{}, f.classify(ctx, u, err, watch)
		}
		select {
		case <-ctx.Done():
			return fetched{}, f.classify(ctx, u, ctx.Err(), watch)
		case <-time.After(resumeDelay):
		}
	}
}

// get sends one request, from byte offset on, and checks the answer.
func (f *fetcher) get(ctx context.Context, u *url.URL, offset int64, validator string) (*http.Response, *watchdog, error) {
	reqCtx, cancel := context.WithCancel(ctx)
	watch := &watchdog{idle: newIdleTimer(f.cfg.IdleTimeout, cancel)}
	req, err := http.NewRequestWithContext(reqCtx, http.MethodGet, u.String(), nil)
	if err != nil {
		watch.stop()
		cancel()
		return nil, watch, permanent(importresult.ReasonURLRefused, err, "The URL %s is not valid.", redact(u))
	}
	req.Header.Set("User-Agent", "image-import-operator")
	f.auth(req)
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		req.Header.Set("If-Range", validator)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		watch.stop()
		cancel()
		return nil, watch, err
	}
	// The rate is measured from the headers on: connecting and waiting for
	// an answer have their own timeouts.
	watch.rate = newRateWatch(f.cfg.MinTransferRate, f.cfg.TransferRateWindow, cancel)
	resp.Body = &watchedBody{r: resp.Body, watch: watch, cancel: cancel}
	switch {
	case offset > 0 && resp.StatusCode != http.StatusPartialContent:
		resp.Body.Close()
		return nil, watch, transient(importresult.ReasonNetworkError, nil,
			"The source changed or stopped serving ranges while the import resumed (HTTP %d).", resp.StatusCode)
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return resp, watch, nil
	}
	resp.Body.Close()
	status := strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
	if resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests {
		return nil, watch, permanent(importresult.ReasonSourceError, nil, "The source %s answered HTTP %s.", redact(u), status)
	}
	return nil, watch, transient(importresult.ReasonNetworkError, nil, "The source %s answered HTTP %s.", redact(u), status)
}

// classify turns a network error into a Failure.
func (f *fetcher) classify(ctx context.Context, u *url.URL, err error, watch *watchdog) *Failure {
	var fl *Failure
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &fl):
		return fl
	case errors.Is(err, urlpolicy.ErrRefused):
		return permanent(importresult.ReasonURLRefused, err, "The source %s is refused by the import URL policy: %s.", redact(u), detail(unwrapRefusal(err)))
	case watch != nil && watch.idle.fired.Load():
		return transient(importresult.ReasonTimeout, err, "The source %s sent nothing for %s.", redact(u), f.cfg.IdleTimeout)
	case watch != nil && watch.slow():
		_, bytes, elapsed := watch.rate.tooSlow()
		return transient(importresult.ReasonTimeout, err,
			"The source %s sent %d bytes in %s, below the minimum transfer rate of %d bytes/s averaged over %s.",
			redact(u), bytes, elapsed.Round(time.Second/10), f.cfg.MinTransferRate, f.cfg.TransferRateWindow)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return transient(importresult.ReasonTimeout, err, "The import did not finish within its time limit.")
	case errors.As(err, &certErr):
		return permanent(importresult.ReasonSourceError, err, "The TLS certificate of %s is not trusted: %v.", redact(u), certErr.Err)
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return permanent(importresult.ReasonSourceError, err, "The host of %s does not exist.", redact(u))
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return transient(importresult.ReasonTimeout, err, "Connecting to %s timed out.", redact(u))
	}
	return transient(importresult.ReasonNetworkError, err, "Fetching %s failed: %s.", redact(u), strings.TrimSuffix(rootCause(err), "."))
}

func unwrapRefusal(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if strings.HasPrefix(e.Error(), urlpolicy.ErrRefused.Error()) {
			return e
		}
	}
	return err
}

func rootCause(err error) string {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

var errTooLarge = errors.New("the source is larger than the limit")

func tooLarge(limit int64) *Failure {
	return permanent(importresult.ReasonUnsafeImage, errTooLarge, "The source is larger than the limit of %d bytes.", limit)
}

// limitReader fails, rather than stops, past n bytes (n < 0: no limit): a
// source larger than the limit is refused, not cut.
func limitReader(r io.Reader, n int64) io.Reader {
	if n < 0 {
		return r
	}
	return &limited{r: r, left: n}
}

type limited struct {
	r    io.Reader
	left int64
}

func (l *limited) Read(p []byte) (int, error) {
	if l.left < 0 { // again: io.ReadFull drops the error of a read that fills its buffer
		return 0, errTooLarge
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, errTooLarge
	}
	return n, err
}

// idleTimer cancels a request when no byte arrives for a while.
type idleTimer struct {
	d     time.Duration
	timer *time.Timer
	fired atomic.Bool
}

func newIdleTimer(d time.Duration, cancel context.CancelFunc) *idleTimer {
	t := &idleTimer{d: d}
	t.timer = time.AfterFunc(d, func() { t.fired.Store(true); cancel() })
	return t
}

func (t *idleTimer) reset() { t.timer.Reset(t.d) }
func (t *idleTimer) stop()  { t.timer.Stop() }

// watchdog is what cancels one request of a source that stalls (idle
// timeout) or trickles (minimum transfer rate).
type watchdog struct {
	idle *idleTimer
	rate *rateWatch // nil: no minimum rate, or no body yet
}

func (w *watchdog) fired() bool { return w.idle.fired.Load() || w.slow() }

func (w *watchdog) slow() bool {
	slow, _, _ := w.rate.tooSlow()
	return slow
}

func (w *watchdog) stop() {
	w.idle.stop()
	w.rate.stop()
}

// watchedBody feeds the watchdog with every byte of a response body.
type watchedBody struct {
	r      io.ReadCloser
	watch  *watchdog
	cancel context.CancelFunc
}

func (r *watchedBody) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.watch.idle.reset()
		r.watch.rate.add(n)
	}
	return n, err
}

func (r *watchedBody) Close() error {
	r.watch.stop()
	err := r.r.Close()
	r.cancel()
	return err
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
