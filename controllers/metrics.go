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

	imageTransitions *prometheus.CounterVec
	imageDeletions   *prometheus.CounterVec
	cleanupFailures  prometheus.Counter
	claimsCreated    *prometheus.CounterVec
}

// NewMetrics registers the operator's metrics. Tasks and images by status are counted
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
	m.imageTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imageimport_image_transitions_total",
		Help: "Images that moved to a Glance status (queued, importing, active, killed, deleted).",
	}, []string{"status"})
	m.imageDeletions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imageimport_image_deletions_total",
		Help: "Deleted Images let go, by outcome: removed (a cleanup Job removed the data), nodata (there was none), storegone (the namespace or the store claim went first), volume (the image's own volume goes with it, by garbage collection).",
	}, []string{"outcome"})
	m.claimsCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imageimport_claims_created_total",
		Help: "PersistentVolumeClaims the operator created, by kind (store: a namespace's image store; volume: an image's own volume) and volume mode.",
	}, []string{"kind", "mode"})
	m.cleanupFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "imageimport_image_cleanup_failures_total",
		Help: "Cleanup Jobs that failed to remove a deleted Image's data (another one runs).",
	})
	reg.MustRegister(m.duration, m.retries, m.failures, m.problems, &taskCollector{reader: reader},
		m.imageTransitions, m.imageDeletions, m.cleanupFailures, m.claimsCreated, &imageCollector{reader: reader})
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

// observeImageTransition counts an Image that moved to status to.
func (m *Metrics) observeImageTransition(to tasksv1.ImagePhase) {
	if m != nil {
		m.imageTransitions.WithLabelValues(string(to)).Inc()
	}
}

// observeImageDeletion counts an Image let go after its deletion, by
// outcome: removed (a cleanup Job removed its data), nodata (it held none),
// storegone (its namespace or store claim went first).
func (m *Metrics) observeImageDeletion(outcome string) {
	if m != nil {
		m.imageDeletions.WithLabelValues(outcome).Inc()
	}
}

// observeCleanupFailure counts a cleanup Job that failed.
func (m *Metrics) observeCleanupFailure() {
	if m != nil {
		m.cleanupFailures.Inc()
	}
}

var imagesDesc = prometheus.NewDesc("imageimport_images",
	"Images by Glance status.", []string{"status"}, nil)

// imageCollector counts images by status at scrape time.
type imageCollector struct {
	reader client.Reader
}

func (c *imageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- imagesDesc }

func (c *imageCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list tasksv1.ImageList
	if err := c.reader.List(ctx, &list); err != nil {
		ch <- prometheus.NewInvalidMetric(imagesDesc, err)
		return
	}
	counts := map[tasksv1.ImagePhase]int{
		tasksv1.ImageQueued: 0, tasksv1.ImageImporting: 0, tasksv1.ImageActive: 0, tasksv1.ImageKilled: 0, tasksv1.ImageDeleted: 0,
	}
	for i := range list.Items {
		counts[phaseName(list.Items[i].Status.Status)]++ // not reconciled yet: queued
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(imagesDesc, prometheus.GaugeValue, float64(n), string(s))
	}
}

// observeClaimCreated counts a claim the operator created.
func (m *Metrics) observeClaimCreated(kind, mode string) {
	if m != nil {
		m.claimsCreated.WithLabelValues(kind, mode).Inc()
	}
}
