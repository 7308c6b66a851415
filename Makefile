# image-import-operator

IMG_TAG ?= dev
IMG_REGISTRY ?= localhost/imageimport
MANAGER_IMG ?= $(IMG_REGISTRY)/manager:$(IMG_TAG)
SHIM_IMG ?= $(IMG_REGISTRY)/glance-shim:$(IMG_TAG)
IMPORTER_IMG ?= $(IMG_REGISTRY)/importer:$(IMG_TAG)
IMG ?= $(MANAGER_IMG)

LOCALBIN ?= $(shell pwd)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUSTOMIZE ?= $(LOCALBIN)/kustomize
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.7.1

# The envtest control plane is built from Go modules (setup-envtest cannot
# download here). Keep ENVTEST_K8S_VERSION's minor equal to k8s.io/api's.
ENVTEST_K8S_VERSION ?= 1.37.2
ENVTEST_ETCD_VERSION ?= v3.7.3
ENVTEST_ASSETS ?= $(LOCALBIN)/k8s/$(ENVTEST_K8S_VERSION)
KUBECTL ?= $(ENVTEST_ASSETS)/kubectl

GO_PACKAGES = $$(go list ./... | grep -v /test/e2e)

# Kubebuilder's: every recipe line stops at the first failing command, and a pipeline fails
# when any command in it fails (so `go test ... | grep ...` fails when go test fails).
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

# bin/ holds build outputs and the local cluster's state, whole container root filesystems that
# containerd changes as it runs: a go.mod of its own keeps ./... patterns (go list, go vet) out of
# it, and controller-gen, which walks every directory under its paths, reads only api/ and
# controllers/.
$(LOCALBIN)/go.mod:
	mkdir -p $(LOCALBIN)
	printf '// Build outputs and local-cluster state, not Go code: out of ./... patterns.\nmodule ignored\n' > $@

.PHONY: manifests
manifests: $(CONTROLLER_GEN) $(LOCALBIN)/go.mod ## Generate the CRD and RBAC manifests.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/...;./controllers/..." output:crd:artifacts:config=config/crd/bases

.PHONY: generate
generate: $(CONTROLLER_GEN) $(LOCALBIN)/go.mod ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: $(LOCALBIN)/go.mod ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: $(LOCALBIN)/go.mod ## Run go vet.
	go vet ./...

.PHONY: deps
deps: ## Install the system packages the tests need (qemu-utils), when missing.
	hack/install-deps.sh

.PHONY: setup-envtest
setup-envtest: $(ENVTEST_ASSETS)/kube-apiserver ## Build kube-apiserver, etcd and kubectl from Go modules.

$(ENVTEST_ASSETS)/kube-apiserver:
	hack/envtest/build.sh $(ENVTEST_ASSETS) v$(ENVTEST_K8S_VERSION) $(ENVTEST_ETCD_VERSION)

# test ends with the race detector over what runs goroutines side by side (decoders, the
# fanout, the NBD export, sandboxed programs); the bomb tests, which only decode zeros, would take minutes under it.
.PHONY: test
test: manifests generate fmt vet deps setup-envtest ## Run all tests: unit, envtest integration, importer with real qemu-img.
	KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" go test $(GO_PACKAGES) -count=1 -coverpkg=./... -coverprofile cover.out
	go test -race ./internal/unpack ./internal/importer ./internal/nbdexport ./internal/sandbox -count=1 -skip 'Bombs|EveryByte'

GLANCE_PORT ?= 19292

.PHONY: test-glance-compat
test-glance-compat: manifests generate deps setup-envtest ## Diff the shim against a real Glance (started here) and the recorded transcripts; run the real clients (test/integration: through to the importer).
	hack/glance/start.sh $(GLANCE_PORT)
	status=0; KUBEBUILDER_ASSETS="$(ENVTEST_ASSETS)" GLANCE_URL=http://127.0.0.1:$(GLANCE_PORT) \
	  go test ./internal/glance ./test/integration -count=1 -run 'LiveDiff|Replay|Glanceclient|Gophercloud|Openstacksdk|Openstackclient|ThroughTheRunner' -v 2>&1 \
	  | { grep -E '^(--- |\s+--- FAIL|ok|FAIL|PASS)|differs|shim:|glance:' || true; } || status=$$?; \
	  hack/glance/stop.sh $(GLANCE_PORT); exit $$status

.PHONY: check-generated
check-generated: manifests generate ## Fail when generated files differ from what is committed.
	@git diff --exit-code -- api config || { echo "generated files are stale: run 'make generate manifests' and commit"; exit 1; }

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the binaries into bin/.
	CGO_ENABLED=0 go build -o bin/manager ./cmd/manager
	CGO_ENABLED=0 go build -o bin/importer ./cmd/importer
	CGO_ENABLED=0 go build -o bin/glance-shim ./cmd/glance-shim

LOCAL_KUBECONFIG = $(LOCALBIN)/local-cluster/state/admin.kubeconfig

.PHONY: run
run: manifests generate $(KUSTOMIZE) ## Bring up the local cluster (or reuse it) with a default StorageClass; deploy the operator, the shim and the store.
	hack/local-cluster/install.sh
	hack/local-cluster/up.sh
	hack/local-cluster/images.sh
	hack/local-cluster/storage.sh
	hack/local-cluster/deploy.sh
	@hack/local-cluster/howto.sh

.PHONY: stop
stop: ## Tear the local cluster down and remove what it set up on the host (state kept; PURGE=1 removes it).
	hack/local-cluster/down.sh $(if $(PURGE),--purge)

# E2E_PACKAGES and E2E_RUN select what test-e2e runs; hack/check-make-gates.sh points them at
# test/e2e/gate to show that a failing test fails the target (make -o run test-e2e ...).
E2E_PACKAGES ?= ./test/e2e
E2E_RUN ?=

.PHONY: test-e2e
test-e2e: run ## End-to-end tests on the local cluster (E2E_RUN=regexp selects tests).
	KUBECONFIG=$(LOCAL_KUBECONFIG) go test -tags e2e $(E2E_PACKAGES) -count=1 -timeout 30m -v $(if $(E2E_RUN),-run '$(E2E_RUN)') 2>&1 \
	  | { grep -vE '^\{' || true; }

.PHONY: run-here
run-here: manifests generate fmt vet install ## Run the manager on this machine against the cluster in $$KUBECONFIG.
	go run ./cmd/manager --importer-image=$(IMPORTER_IMG)

.PHONY: docker-build
docker-build: ## Build the manager and importer images (needs a Docker engine).
	docker build -t $(MANAGER_IMG) --build-arg CMD=manager -f Dockerfile .
	docker build -t $(SHIM_IMG) --build-arg CMD=glance-shim -f Dockerfile .
	docker build -t $(IMPORTER_IMG) -f Dockerfile.importer .

##@ Deployment

.PHONY: install
install: manifests $(KUSTOMIZE) ## Install the CRD into the cluster in $$KUBECONFIG.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests $(KUSTOMIZE) ## Remove the CRD (and every task) from the cluster.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests $(KUSTOMIZE) ## Deploy the CRD, RBAC and manager (IMG=..., IMPORTER_IMG=...).
	cd config/manager && $(KUSTOMIZE) edit set image manager=$(IMG)
	$(KUSTOMIZE) build config/default | sed 's#--importer-image=.*#--importer-image=$(IMPORTER_IMG)#' | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: $(KUSTOMIZE) ## Remove what deploy created.
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found -f -

##@ Tools

$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

$(KUSTOMIZE):
	GOBIN=$(LOCALBIN) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
