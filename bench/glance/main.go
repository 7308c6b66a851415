// Command glance benchmarks the Glance shim against a real Glance in one run:
// POST /v2/tasks, GET /v2/tasks/{id} and GET /v2/tasks latency (p50, p99) and
// sequential throughput, with 1,000 and 10,000 tasks present, and prints the
// ratios shim/Glance. It asserts nothing. bench/glance.sh starts Glance.
//
// The shim runs in process on a real kube-apiserver and etcd (the envtest
// binaries under bin/k8s) and reads through its informer cache, as deployed.
// Tasks are added to both sides directly (API objects for the shim, database
// rows for Glance), so that filling 10,000 does not take an hour.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
	"github.com/imageimport/image-import-operator/internal/glance"
	"github.com/imageimport/image-import-operator/internal/urlpolicy"
)

const body = `{"type":"import","input":{"import_from":"http://127.0.0.1:19293/small.qcow2","import_from_format":"qcow2","image_properties":{"disk_format":"qcow2","container_format":"bare"}}}`

func main() {
	glanceURL := flag.String("glance", "http://127.0.0.1:19292", "the real Glance")
	glanceDB := flag.String("glance-db", "", "Glance's sqlite database, to add tasks to")
	requests := flag.Int("requests", 200, "requests per measurement")
	flag.Parse()
	if err := run(*glanceURL, *glanceDB, *requests); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(glanceURL, glanceDB string, n int) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(tasksv1.AddToScheme(scheme))
	env := &envtest.Environment{CRDDirectoryPaths: []string{"config/crd/bases"}, ErrorIfCRDPathMissing: true, Scheme: scheme}
	cfg, err := env.Start()
	if err != nil {
		return err
	}
	defer env.Stop()
	cfg.QPS, cfg.Burst = 1000, 2000
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx := context.Background()
	tasks, err := cache.New(cfg, cache.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := glance.AddIndexes(ctx, tasks); err != nil {
		return err
	}
	go tasks.Start(ctx)
	tasks.WaitForCacheSync(ctx)
	policy := urlpolicy.Default()
	policy.AllowedHosts, policy.AllowedPorts = []string{"127.0.0.1"}, nil
	compiled, _ := urlpolicy.Compile(policy)
	shim := &glance.Server{Cache: tasks, Writer: k8s, Auth: glance.NewNoAuth("admin"),
		Namespaces: glance.SingleNamespace("default"), URLPolicy: compiled}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go http.Serve(l, shim)
	shimURL := "http://" + l.Addr().String()

	fmt.Printf("%-34s %10s %10s %10s %12s\n", "request", "p50 ms", "p99 ms", "req/s", "shim/glance")
	report := func(name string, shimRes, glanceRes result) {
		fmt.Printf("%-34s %10.2f %10.2f %10.0f\n", "shim   "+name, shimRes.p50, shimRes.p99, shimRes.rate)
		fmt.Printf("%-34s %10.2f %10.2f %10.0f %12.2f (p50)\n", "glance "+name, glanceRes.p50, glanceRes.p99, glanceRes.rate, shimRes.p50/glanceRes.p50)
	}
	report("POST /v2/tasks", measure(n, "POST", shimURL+"/v2/tasks"), measure(n, "POST", glanceURL+"/v2/tasks"))

	present := 0
	for _, size := range []int{1000, 10000} {
		if err := addShimTasks(ctx, k8s, size-present); err != nil {
			return err
		}
		if err := addGlanceTasks(glanceDB, size-present); err != nil {
			return err
		}
		present = size
		for !synced(ctx, tasks, size) {
			time.Sleep(100 * time.Millisecond)
		}
		id := firstID(shimURL)
		gid := firstID(glanceURL)
		fmt.Printf("-- about %d tasks present\n", size)
		report("GET /v2/tasks/{id}", measure(n, "GET", shimURL+"/v2/tasks/"+id), measure(n, "GET", glanceURL+"/v2/tasks/"+gid))
		report("GET /v2/tasks", measure(n, "GET", shimURL+"/v2/tasks"), measure(n, "GET", glanceURL+"/v2/tasks"))
	}
	return nil
}

type result struct{ p50, p99, rate float64 }

// measure sends n requests one after the other.
func measure(n int, method, url string) result {
	lat := make([]float64, 0, n)
	start := time.Now()
	for range n {
		var rd io.Reader
		if method == "POST" {
			rd = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, url, rd)
		req.Header.Set("X-Auth-Token", "admin:admin:admin")
		req.Header.Set("Content-Type", "application/json")
		t := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		lat = append(lat, float64(time.Since(t).Microseconds())/1000)
	}
	total := time.Since(start).Seconds()
	slices.Sort(lat)
	return result{p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], rate: float64(n) / total}
}

func addShimTasks(ctx context.Context, k8s client.Client, count int) error {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	next := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				t := &tasksv1.ImageImportTask{
					ObjectMeta: metav1.ObjectMeta{Name: "task-" + uuid.NewString(), Namespace: "default",
						Annotations: map[string]string{"tasks.imageimport.io/owner": "admin", "tasks.imageimport.io/glance-input": body}},
					Spec: tasksv1.ImageImportTaskSpec{Type: "import", Input: tasksv1.TaskInput{
						ImportFrom: "http://127.0.0.1:19293/small.qcow2", ImportFromFormat: "qcow2",
						ImageProperties: &tasksv1.ImageProperties{DiskFormat: "qcow2", ContainerFormat: "bare"}}},
				}
				if err := k8s.Create(ctx, t); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range count {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

func synced(ctx context.Context, r client.Reader, want int) bool {
	var list tasksv1.ImageImportTaskList
	return r.List(ctx, &list) == nil && len(list.Items) >= want
}

// addGlanceTasks inserts finished import tasks into Glance's database, as
// Glance itself writes them.
func addGlanceTasks(db string, count int) error {
	script := `
import sqlite3, sys, uuid, datetime
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
now = datetime.datetime.utcnow()
rows, infos = [], []
for i in range(n):
    tid = str(uuid.uuid4())
    t = (now + datetime.timedelta(microseconds=i)).strftime('%Y-%m-%d %H:%M:%S.%f')
    e = (now + datetime.timedelta(days=2)).strftime('%Y-%m-%d %H:%M:%S.%f')
    rows.append((tid, 'import', 'success', 'admin', e, t, t, None, 0, None, 'req-' + str(uuid.uuid4()), 'admin'))
    infos.append((tid, sys.argv[3], '{"image_id": "' + str(uuid.uuid4()) + '"}', ''))
c.executemany('insert into tasks values (?,?,?,?,?,?,?,?,?,?,?,?)', rows)
c.executemany('insert into task_info values (?,?,?,?)', infos)
c.commit()
`
	out, err := exec.Command("/usr/bin/python3", "-c", script, filepath.Clean(db), fmt.Sprint(count), strings.Split(body, `"input":`)[1][:len(strings.Split(body, `"input":`)[1])-1]).CombinedOutput()
	if err != nil {
		return fmt.Errorf("adding Glance tasks: %v: %s", err, out)
	}
	return nil
}

func firstID(base string) string {
	req, _ := http.NewRequest("GET", base+"/v2/tasks?limit=1", nil)
	req.Header.Set("X-Auth-Token", "admin:admin:admin")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s := string(b)
	if i := strings.Index(s, `"id": "`); i >= 0 {
		return s[i+7 : i+43]
	}
	return ""
}
