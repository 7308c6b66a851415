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

// Namespaces maps a Glance project to the namespace its tasks live in.
type Namespaces interface {
	For(ctx context.Context, project string) (string, error)
}

// SingleNamespace puts every project's tasks in one namespace.
type SingleNamespace string

func (s SingleNamespace) For(context.Context, string) (string, error) { return string(s), nil }

// NamespaceTemplate names the namespace after the project: "glance-{project}".
type NamespaceTemplate string

func (t NamespaceTemplate) For(_ context.Context, project string) (string, error) {
	return strings.ReplaceAll(string(t), "{project}", strings.ToLower(project)), nil
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
