package controllers

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tasksv1 "github.com/imageimport/image-import-operator/api/v1alpha1"
)

// Metrics are the operator's Prometheus metrics, served on the manager's
// metrics endpoint.
type Metrics struct {
	duration *prometheus.HistogramVec
	retries  prometheus.Counter
	failures *prometheus.CounterVec
	problems *prometheus.CounterVec
}

// NewMetrics registers the operator's metrics. Tasks by status are counted
// from reader (the manager's cache) when Prometheus scrapes, so the figure
// is right after a restart and across replicas.
func NewMetrics(reg prometheus.Registerer, reader client.Reader) *Metrics {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imageimport_task_duration_seconds",
			Help:    "Time from a task's creation to its success or failure.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 16), // 1 s .. 9 h
		}, []string{"status"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imageimport_job_retries_total",
			Help: "Importer pods started again after a transient failure.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageimport_task_failures_total",
			Help: "Tasks that failed, by reason (the importer's, such as UnsafeImage, or the Job's, such as DeadlineExceeded).",
		}, []string{"reason"}),
		problems: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imageimport_task_start_problems_total",
			Help: "Times a task's importer was found unable to start, by reason (StoreClaimMissing, Unschedulable, ImagePullFailed, QuotaExceeded, ...).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.duration, m.retries, m.failures, m.problems, &taskCollector{reader: reader})
	return m
}

// observeTransition records what a reconcile changed in a task.
func (m *Metrics) observeTransition(before, after *tasksv1.ImageImportTask, failureReason string) {
	if m == nil {
		return
	}
	if retried := max(after.Status.Attempts-1, 0) - max(before.Status.Attempts-1, 0); retried > 0 {
		m.retries.Add(float64(retried))
	}
	if before.Status.Status.Terminal() || !after.Status.Status.Terminal() {
		return
	}
	took := after.Status.CompletionTime.Sub(after.CreationTimestamp.Time)
	m.duration.WithLabelValues(string(after.Status.Status)).Observe(took.Seconds())
	if after.Status.Status == tasksv1.TaskFailure {
		m.failures.WithLabelValues(failureReason).Inc()
	}
}

// observeStartProblem counts a task found unable to start, for reason.
func (m *Metrics) observeStartProblem(reason string) {
	if m != nil {
		m.problems.WithLabelValues(reason).Inc()
	}
}

var (
	tasksDesc = prometheus.NewDesc("imageimport_tasks",
		"ImageImportTasks by Glance status.", []string{"status"}, nil)
	waitingDesc = prometheus.NewDesc("imageimport_tasks_waiting",
		"Unfinished ImageImportTasks whose importer cannot start, by reason.", []string{"reason"}, nil)
)

// taskCollector counts tasks by status at scrape time.
type taskCollector struct {
	reader client.Reader
}

func (c *taskCollector) Describe(ch chan<- *prometheus.Desc) { ch <- tasksDesc; ch <- waitingDesc }

func (c *taskCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list tasksv1.ImageImportTaskList
	if err := c.reader.List(ctx, &list); err != nil {
		ch <- prometheus.NewInvalidMetric(tasksDesc, err)
		ch <- prometheus.NewInvalidMetric(waitingDesc, err)
		return
	}
	waiting := map[string]int{}
	counts := map[tasksv1.TaskStatus]int{
		tasksv1.TaskPending: 0, tasksv1.TaskProcessing: 0, tasksv1.TaskSuccess: 0, tasksv1.TaskFailure: 0,
	}
	for i := range list.Items {
		s := list.Items[i].Status.Status
		if s == "" {
			s = tasksv1.TaskPending // not reconciled yet
		}
		counts[s]++
		if p := startProblemOf(&list.Items[i]); p != nil && !s.Terminal() {
			waiting[p.reason]++
		}
	}
	for reason, n := range waiting {
		ch <- prometheus.MustNewConstMetric(waitingDesc, prometheus.GaugeValue, float64(n), reason)
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(tasksDesc, prometheus.GaugeValue, float64(n), string(s))
	}
}
