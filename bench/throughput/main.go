// Command throughput runs N import tasks at once through the Glance tasks
// API, against the shim on the local cluster and against a real Glance in
// the same run, and prints how long until every task is terminal on each,
// with the ratio. For the shim it then breaks each task's life into phases
// from the cluster's own timestamps: POST, task created, Job created, pod
// created, pod scheduled, container started, import done, status success.
// It asserts nothing. bench/throughput.sh starts Glance and the cluster.
//
// Kubernetes timestamps have one-second precision (but the task's creation
// annotation and status times the reconciler writes): phase means over
// many tasks are still meaningful, single values are not.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

func main() {
	shim := flag.String("shim", "http://127.0.0.1:9292", "the shim")
	glanceURL := flag.String("glance", "", "a real Glance; empty: the shim only")
	image := flag.String("image", "", "the qcow2 file every task imports")
	nodeAddr := flag.String("node-address", "10.88.0.2", "where the cluster's importers reach this machine")
	tasks := flag.Int("tasks", 100, "tasks per run")
	clients := flag.Int("clients", 10, "concurrent clients")
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "the local cluster, for the phase breakdown")
	namespace := flag.String("namespace", "images", "the namespace the shim creates tasks in")
	flag.Parse()
	if err := run(*shim, *glanceURL, *image, *nodeAddr, *tasks, *clients, *kubeconfig, *namespace); err != nil {
		fmt.Fprintln(os.Stderr, "throughput:", err)
		os.Exit(1)
	}
}

func run(shim, glanceURL, image, nodeAddr string, n, clients int, kubeconfig, namespace string) error {
	data, err := os.ReadFile(image)
	if err != nil {
		return err
	}
	serve := func(addr string) (string, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return "", err
		}
		go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "image.qcow2", time.Time{}, bytes.NewReader(data))
		}))
		return "http://" + l.Addr().String() + "/image.qcow2", nil
	}
	forCluster, err := serve(net.JoinHostPort(nodeAddr, "0"))
	if err != nil {
		return err
	}
	before := sampleCPU()
	shimRun := runTasks(shim, forCluster, n, clients)
	shimCPU := sampleCPU()
	fmt.Printf("shim:   %d tasks, %d clients: all terminal in %.1f s, %d success, POST p50 %.0f ms\n",
		n, clients, shimRun.total.Seconds(), shimRun.success, ms(percentile(shimRun.posts, 50)))
	glanceTime := 0.0
	if glanceURL != "" {
		forGlance, err := serve("127.0.0.1:0")
		if err != nil {
			return err
		}
		glanceBefore := sampleCPU()
		g := runTasks(glanceURL, forGlance, n, clients)
		glanceAfter := sampleCPU()
		defer cpuReport("Glance", glanceBefore, glanceAfter, g.total.Seconds(), n, func(string) string { return "" }) // after the shim's
		fmt.Printf("glance: %d tasks, %d clients: all terminal in %.1f s, %d success, POST p50 %.0f ms\n",
			n, clients, g.total.Seconds(), g.success, ms(percentile(g.posts, 50)))
		fmt.Printf("ratio shim/glance: %.2f\n", shimRun.total.Seconds()/g.total.Seconds())
		glanceTime = g.total.Seconds()
	}
	if kubeconfig == "" {
		cpuReport("shim", before, shimCPU, shimRun.total.Seconds(), n, func(string) string { return "" })
		return nil
	}
	c, err := newClient(kubeconfig)
	if err != nil {
		return err
	}
	group, err := podGroups(c)
	if err != nil {
		return err
	}
	groups := cpuReport("shim", before, shimCPU, shimRun.total.Seconds(), n, group)
	scaling(groups, n, shimRun.total.Seconds(), glanceTime)
	return breakdown(c, namespace, shimRun)
}

// podGroups names each pod of the cluster by what it runs: the importers
// together, the others by their workload's name.
func podGroups(c client.Client) (func(uid string) string, error) {
	var pods corev1.PodList
	if err := c.List(context.Background(), &pods); err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, p := range pods.Items {
		name := strings.TrimSuffix(p.GenerateName, "-")
		if i := strings.LastIndexByte(name, '-'); i > 0 && p.Labels["pod-template-hash"] != "" {
			name = name[:i] // a ReplicaSet's pod
		}
		if _, ok := p.Labels[tasksv1.LabelTaskUID]; ok {
			name = "importers"
		}
		names[string(p.UID)] = p.Namespace + "/" + cmp.Or(name, p.Name)
	}
	return func(uid string) string { return names[uid] }, nil
}

func newClient(kubeconfig string) (client.Client, error) {
	ctrllog.SetLogger(logr.Discard())
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(tasksv1.AddToScheme(scheme))
	return client.New(cfg, client.Options{Scheme: scheme})
}

// result is one side's run.
type result struct {
	total   time.Duration
	success int
	posts   []time.Duration
	// posted is when each task's POST was sent, by task id.
	posted map[string]time.Time
}

func runTasks(api, source string, n, clients int) result {
	body, _ := json.Marshal(map[string]any{"type": "import", "input": map[string]any{
		"import_from": source, "import_from_format": "qcow2",
		"image_properties": map[string]any{"disk_format": "qcow2", "container_format": "bare"},
	}})
	var (
		mu  sync.Mutex
		res = result{posted: map[string]time.Time{}}
		wg  sync.WaitGroup
	)
	jobs := make(chan int)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				t0 := time.Now()
				id, err := post(api, body)
				took := time.Since(t0)
				if err != nil {
					fmt.Fprintln(os.Stderr, "POST:", err)
					continue
				}
				mu.Lock()
				res.posts, res.posted[id] = append(res.posts, took), t0
				mu.Unlock()
				if waitTerminal(api, id) == "success" {
					mu.Lock()
					res.success++
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	res.total = time.Since(start)
	return res
}

func post(api string, body []byte) (string, error) {
	req, _ := http.NewRequest(http.MethodPost, api+"/v2/tasks", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Auth-Token", "bench:admin:admin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var task struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&task); err != nil || resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("%s: %v", resp.Status, err)
	}
	return task.ID, nil
}

// waitTerminal polls the task until it succeeds or fails.
func waitTerminal(api, id string) string {
	for {
		req, _ := http.NewRequest(http.MethodGet, api+"/v2/tasks/"+id, nil)
		req.Header.Set("X-Auth-Token", "bench:admin:admin")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var task struct{ Status string }
			json.NewDecoder(resp.Body).Decode(&task)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if task.Status == "success" || task.Status == "failure" {
				return task.Status
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// phases are the steps of a task's life on the cluster, in order.
var phases = []string{"POST sent", "task created", "Job created", "pod created", "pod scheduled", "container started", "import done", "status success"}

// breakdown prints, for each phase, the mean and p90 time from the one
// before, over the tasks of the run.
func breakdown(c client.Client, namespace string, r result) error {
	ctx := context.Background()
	var tasks tasksv1.ImageImportTaskList
	var jobs batchv1.JobList
	var pods corev1.PodList
	for _, l := range []client.ObjectList{&tasks, &jobs, &pods} {
		if err := c.List(ctx, l, client.InNamespace(namespace)); err != nil {
			return err
		}
	}
	jobByName := map[string]*batchv1.Job{}
	for i := range jobs.Items {
		jobByName[jobs.Items[i].Name] = &jobs.Items[i]
	}
	podByJob := map[string]*corev1.Pod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if j := p.Labels[batchv1.JobNameLabel]; j != "" && p.Status.Phase == corev1.PodSucceeded {
			podByJob[j] = p
		}
	}
	steps := make([][]time.Duration, len(phases)-1)
	for i := range tasks.Items {
		t := &tasks.Items[i]
		posted, ok := r.posted[string(t.UID)]
		job, pod := jobByName[t.Status.JobName], podByJob[t.Status.JobName]
		if !ok || job == nil || pod == nil || t.Status.CompletionTime == nil || len(pod.Status.ContainerStatuses) == 0 {
			continue
		}
		term := pod.Status.ContainerStatuses[0].State.Terminated
		created, err := time.Parse(time.RFC3339Nano, t.Annotations["tasks.imageimport.io/created-at"])
		if err != nil {
			created = t.CreationTimestamp.Time
		}
		times := []time.Time{posted, created, job.CreationTimestamp.Time, pod.CreationTimestamp.Time,
			scheduled(pod), term.StartedAt.Time, term.FinishedAt.Time, t.Status.CompletionTime.Time}
		for k := 1; k < len(times); k++ {
			steps[k-1] = append(steps[k-1], times[k].Sub(times[k-1]))
		}
	}
	fmt.Printf("\nshim phases over %d tasks (from the phase before; 1 s timestamps but the task's own):\n", len(steps[0]))
	for k, d := range steps {
		fmt.Printf("  %-18s -> %-18s mean %6.2f s  p90 %6.2f s\n", phases[k], phases[k+1], mean(d).Seconds(), percentile(d, 90).Seconds())
	}
	return nil
}

func scheduled(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return c.LastTransitionTime.Time
		}
	}
	return p.CreationTimestamp.Time
}

func mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
