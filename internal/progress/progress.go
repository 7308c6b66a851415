// Package progress pushes an importer's progress into its ImageImportTask's
// status, through the API server, as the pod's own service account: the
// reconciler gives each import a service account that may patch the status
// of that one task and nothing else. Pushing through the API server works
// under a default-deny NetworkPolicy, where nothing can scrape pod IPs.
//
// It speaks plain HTTPS with the mounted token, so that the importer does
// not depend on client-go.
package progress

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// serviceAccountDir is where the kubelet mounts the pod's token and CA.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Progress is the status.progress of an ImageImportTask.
type Progress struct {
	Phase      string `json:"phase"`
	Percent    *int32 `json:"percent,omitempty"`
	BytesDone  int64  `json:"bytesDone"`
	BytesTotal int64  `json:"bytesTotal,omitempty"`
}

// TaskStatus patches the progress of one task.
type TaskStatus struct {
	client *http.Client
	url    string
	token  string
}

// InCluster returns a reporter for the task namespace/name, with the pod's
// service account and the in-cluster API server address.
func InCluster(namespace, name string) (*TaskStatus, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	token, err := os.ReadFile(serviceAccountDir + "/token")
	if err != nil || host == "" {
		return nil, fmt.Errorf("no in-cluster service account to report progress with: %v", err)
	}
	ca, err := os.ReadFile(serviceAccountDir + "/ca.crt")
	if err != nil {
		return nil, err
	}
	return New("https://"+net.JoinHostPort(host, port), ca, string(token), namespace, name)
}

// New returns a reporter that patches namespace/name on the API server at
// server, trusting caPEM.
func New(server string, caPEM []byte, token, namespace, name string) (*TaskStatus, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no CA certificate for the API server")
	}
	return &TaskStatus{
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
		url: fmt.Sprintf("%s/apis/tasks.imageimport.io/v1alpha1/namespaces/%s/imageimporttasks/%s/status",
			strings.TrimSuffix(server, "/"), url.PathEscape(namespace), url.PathEscape(name)),
		token: token,
	}, nil
}

// Report patches the progress. Failures are returned for logging only: an
// import never fails because its progress could not be shown.
func (t *TaskStatus) Report(ctx context.Context, p Progress) error {
	return t.patch(ctx, map[string]any{"progress": withPercent(p)})
}

// ReportResult patches the importer's result (the JSON of its termination
// message) with the last progress: the reconciler ends the task from it at
// once, instead of when the kubelet reports the pod's end. When it fails,
// the termination message still tells, later.
func (t *TaskStatus) ReportResult(ctx context.Context, result []byte, p Progress) error {
	return t.patch(ctx, map[string]any{"progress": withPercent(p), "importerResult": string(result)})
}

func withPercent(p Progress) Progress {
	if p.BytesTotal > 0 {
		pct := int32(min(100, p.BytesDone*100/p.BytesTotal))
		p.Percent = &pct
	}
	return p
}

// patch merges status into the task's status.
func (t *TaskStatus) patch(ctx context.Context, status map[string]any) error {
	body, _ := json.Marshal(map[string]any{"status": status})
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, t.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/merge-patch+json")
	req.Header.Set("Authorization", "Bearer "+t.token)
	resp, err := t.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var refusal struct{ Message string }
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&refusal)
	if resp.StatusCode == http.StatusForbidden && strings.Contains(refusal.Message, EndedMessage) {
		return ErrImportEnded
	}
	return fmt.Errorf("patching %s: HTTP %d: %s", t.url, resp.StatusCode, refusal.Message)
}

// EndedMessage is what the API server answers a push into the status of a
// task whose import has ended (config/policy/importer_status.yaml).
const EndedMessage = "the import has ended"

// ErrImportEnded is the refusal of a push into a task whose import has
// ended: another attempt of its Job stored the image, or the task is final.
var ErrImportEnded = errors.New("the task's import has ended")
