package glance

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// LabelProjectID marks a namespace as a project's, and a task with its
// owner's project.
const LabelProjectID = "tasks.imageimport.io/project-id"

// Namespaces maps a Glance project to the namespace its tasks and images
// live in, and back.
type Namespaces interface {
	For(ctx context.Context, project string) (string, error)
	// ProjectOf is the project whose namespace this is. mapped is false
	// when the namespace does not tell the project (one namespace holds
	// every project's objects): the owner annotation is then the record.
	// When mapped, project is "" for a namespace of no project.
	ProjectOf(ctx context.Context, namespace string) (project string, mapped bool, err error)
}

// SingleNamespace puts every project's tasks in one namespace.
type SingleNamespace string

func (s SingleNamespace) For(context.Context, string) (string, error) { return string(s), nil }

func (s SingleNamespace) ProjectOf(context.Context, string) (string, bool, error) {
	return "", false, nil
}

// NamespaceTemplate names the namespace after the project: "glance-{project}".
type NamespaceTemplate string

func (t NamespaceTemplate) For(_ context.Context, project string) (string, error) {
	return strings.ReplaceAll(string(t), "{project}", strings.ToLower(project)), nil
}

// ProjectOf reads the (lower-cased) project out of the namespace's name.
// A template without {project} is one namespace for all; one with it twice
// gives no namespace a project (its images are the admins').
func (t NamespaceTemplate) ProjectOf(_ context.Context, namespace string) (string, bool, error) {
	prefix, suffix, ok := strings.Cut(string(t), "{project}")
	switch {
	case !ok:
		return "", false, nil
	case strings.Contains(suffix, "{project}"):
		return "", true, nil
	}
	rest, ok := strings.CutPrefix(namespace, prefix)
	if !ok {
		return "", true, nil
	}
	project, ok := strings.CutSuffix(rest, suffix)
	if !ok {
		return "", true, nil
	}
	return project, true, nil
}

// LabelledNamespace finds the namespace labelled with the project id.
type LabelledNamespace struct {
	Reader client.Reader
}

func (l LabelledNamespace) For(ctx context.Context, project string) (string, error) {
	var list corev1.NamespaceList
	if err := l.Reader.List(ctx, &list, client.MatchingLabels{LabelProjectID: project}); err != nil {
		return "", err
	}
	if len(list.Items) != 1 {
		return "", fmt.Errorf("%d namespaces are labelled %s=%s, not one", len(list.Items), LabelProjectID, project)
	}
	return list.Items[0].Name, nil
}

// ProjectOf is the namespace's project label.
func (l LabelledNamespace) ProjectOf(ctx context.Context, namespace string) (string, bool, error) {
	var ns corev1.Namespace
	if err := l.Reader.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		return "", true, client.IgnoreNotFound(err)
	}
	return ns.Labels[LabelProjectID], true, nil
}
