// Command kubeapi is a fake Kubernetes API server for side-by-side.sh: it
// lets CoreDNS's kubernetes plugin (client-go informers) list and watch a
// fixed set of objects without building kube-apiserver and etcd.
//
// It is NOT a Kubernetes API server. It serves, read-only, over plain HTTP
// on a loopback address, always as JSON (whatever Accept says), only what
// a read-only informer of CoreDNS v1.15.0 asks for:
//
//	GET /version
//	GET /api/v1/services                        LIST, or WATCH with ?watch=true
//	GET /apis/discovery.k8s.io/v1/endpointslices
//	GET /api/v1/namespaces
//
// The data never changes: N services svc<i> in namespace default (type
// ClusterIP, cluster IP 10.96.<1+i/250>.<1+i%250>, port http 80/TCP), one
// EndpointSlice svc<i>-x1 each (two ready IPv4 endpoints, port http
// 8080/TCP), namespaces default and kube-system: the names, addresses and
// shape of `bench -serve` (../main.go, loadPeer). All objects and lists
// carry one resourceVersion.
//
// A LIST returns everything (limit is ignored, there is no continue
// token). A WATCH sends the initial state if asked for it — as the
// WatchList protocol of recent client-go wants (sendInitialEvents=true:
// ADDED events, then a BOOKMARK annotated k8s.io/initial-events-end, after
// which the informer counts as synced) or as a legacy watch from
// resourceVersion "" or "0" does — then nothing more until timeoutSeconds
// passes or the client goes away. Label and field selectors are refused.
// Every request is logged; unknown paths get 404.
//
// Usage:
//
//	go build -o /tmp/kubeapi ./dns/bench/kubeapi && /tmp/kubeapi -addr 127.0.0.1:18080 -services 1000
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/version"
)

// resourceVersion is that of every object and list: nothing ever changes.
const resourceVersion = "1"

// resource is one listable, watchable collection.
type resource struct {
	kind, listKind, apiVersion string
	items                      []any // *corev1.Service etc., TypeMeta set
}

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "loopback address to serve plain HTTP on")
	n := flag.Int("services", 1000, "services (each with one EndpointSlice) to serve")
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)
	if err := run(*addr, *n); err != nil {
		log.Fatal("kubeapi: ", err)
	}
}

func run(addr string, n int) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("-addr %s: only loopback addresses are allowed", addr)
	}
	if n < 1 {
		return errors.New("want -services above 0")
	}
	svcs := &resource{kind: "Service", listKind: "ServiceList", apiVersion: "v1"}
	slices := &resource{kind: "EndpointSlice", listKind: "EndpointSliceList", apiVersion: "discovery.k8s.io/v1"}
	nss := &resource{kind: "Namespace", listKind: "NamespaceList", apiVersion: "v1"}
	for i := range n {
		svcs.items = append(svcs.items, service(i))
		slices.items = append(slices.items, endpointSlice(i))
	}
	for _, ns := range []string{"default", "kube-system"} {
		nss.items = append(nss.items, &corev1.Namespace{
			TypeMeta:   metav1.TypeMeta{Kind: "Namespace", APIVersion: "v1"},
			ObjectMeta: objectMeta(ns, ""),
			Status:     corev1.NamespaceStatus{Phase: corev1.NamespaceActive},
		})
	}
	routes := map[string]*resource{
		"/api/v1/services":                         svcs,
		"/apis/discovery.k8s.io/v1/endpointslices": slices,
		"/api/v1/namespaces":                       nss,
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveHTTP(w, r, routes) }),
		// Cancelled on SIGINT/SIGTERM: open watches end, then Shutdown.
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ReadHeaderTimeout: 10 * time.Second,
	}
	log.Printf("listening on http://%s: %d services, %d endpointslices, %d namespaces",
		ln.Addr(), len(svcs.items), len(slices.items), len(nss.items))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(sctx)
	log.Printf("stopped")
	return err
}

func objectMeta(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace, ResourceVersion: resourceVersion}
}

// service i is svc<i>.default with the cluster IP of bench -serve.
func service(i int) *corev1.Service {
	ip := fmt.Sprintf("10.96.%d.%d", byte(1+i/250), byte(1+i%250))
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{Kind: "Service", APIVersion: "v1"},
		ObjectMeta: objectMeta(fmt.Sprintf("svc%d", i), "default"),
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  ip,
			ClusterIPs: []string{ip},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80,
				TargetPort: intstr.FromInt32(8080)}},
		},
	}
}

// endpointSlice i belongs to svc<i>: two ready endpoints, addresses as
// bench -serve makes them.
func endpointSlice(i int) *discoveryv1.EndpointSlice {
	name, port, proto, ready := "http", int32(8080), corev1.ProtocolTCP, true
	es := &discoveryv1.EndpointSlice{
		TypeMeta:    metav1.TypeMeta{Kind: "EndpointSlice", APIVersion: "discovery.k8s.io/v1"},
		ObjectMeta:  objectMeta(fmt.Sprintf("svc%d-x1", i), "default"),
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}},
	}
	es.Labels = map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc%d", i)}
	for j := range 2 {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.%d.%d.%d", byte(128+i>>14), byte(i>>6), byte(i<<2|j))},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return es
}

func serveHTTP(w http.ResponseWriter, r *http.Request, routes map[string]*resource) {
	w.Header().Set("Content-Type", "application/json")
	q := r.URL.Query()
	res, known := routes[r.URL.Path]
	switch {
	case r.Method != http.MethodGet:
		fail(w, r, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "read-only fake: only GET")
	case r.URL.Path == "/version":
		logf(r, http.StatusOK, "")
		_ = json.NewEncoder(w).Encode(version.Info{Major: "1", Minor: "37", GitVersion: "v1.37.2-kubewire-fake",
			Platform: "linux/amd64"})
	case !known:
		fail(w, r, http.StatusNotFound, metav1.StatusReasonNotFound, "the fake API server does not serve "+r.URL.Path)
	case q.Get("labelSelector") != "" || q.Get("fieldSelector") != "":
		fail(w, r, http.StatusBadRequest, metav1.StatusReasonBadRequest, "the fake API server supports no selectors")
	case q.Get("watch") == "true" || q.Get("watch") == "1":
		watch(w, r, res)
	default:
		logf(r, http.StatusOK, fmt.Sprintf("list of %d", len(res.items)))
		_ = json.NewEncoder(w).Encode(struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        metav1.ListMeta `json:"metadata"`
			Items           []any           `json:"items"`
		}{metav1.TypeMeta{Kind: res.listKind, APIVersion: res.apiVersion}, metav1.ListMeta{ResourceVersion: resourceVersion}, res.items})
	}
}

type event struct {
	Type   string `json:"type"`
	Object any    `json:"object"`
}

// watch streams the initial events if asked for, then holds the
// connection open until timeoutSeconds, the client or SIGTERM ends it.
func watch(w http.ResponseWriter, r *http.Request, res *resource) {
	q := r.URL.Query()
	initial := q.Get("sendInitialEvents") == "true" ||
		(q.Get("sendInitialEvents") == "" && (q.Get("resourceVersion") == "" || q.Get("resourceVersion") == "0"))
	bookmark := q.Get("sendInitialEvents") == "true" && q.Get("allowWatchBookmarks") == "true"
	ctx := r.Context()
	if t, err := strconv.Atoi(q.Get("timeoutSeconds")); err == nil && t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(t)*time.Second)
		defer cancel()
	}
	sent := 0
	if initial {
		sent = len(res.items)
	}
	logf(r, http.StatusOK, fmt.Sprintf("watch: %d initial events, end bookmark %v", sent, bookmark))
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w) // one event per line, as the JSON stream framer expects
	if initial {
		for _, it := range res.items {
			if enc.Encode(event{"ADDED", it}) != nil {
				return
			}
		}
	}
	if bookmark {
		_ = enc.Encode(event{"BOOKMARK", map[string]any{"kind": res.kind, "apiVersion": res.apiVersion,
			"metadata": map[string]any{"resourceVersion": resourceVersion,
				"annotations": map[string]string{metav1.InitialEventsAnnotationKey: "true"}}}})
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush() // the headers at least: client-go waits for them
	}
	start := time.Now()
	<-ctx.Done()
	log.Printf("watch %s ended after %v", r.URL.Path, time.Since(start).Round(time.Millisecond))
}

func fail(w http.ResponseWriter, r *http.Request, code int, reason metav1.StatusReason, msg string) {
	logf(r, code, msg)
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg})
}

func logf(r *http.Request, code int, note string) {
	log.Printf("%s %s %d %s (accept %q, user-agent %q)", r.Method, r.URL.RequestURI(), code, note,
		r.Header.Get("Accept"), r.UserAgent())
}
