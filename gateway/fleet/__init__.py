"""A fleet of replicas: this process as one of them.

``warming.py`` (what a process warms at start and which alias moves it follows),
``membership.py`` (its heartbeat, holdings and history in the state database), ``drain.py``
(SIGTERM in the order a balancer needs) and ``view.py`` (the whole fleet, as ``/fleet`` shows
it). Replicas share nothing but the state database: no replica calls another, and routing by
model is the proxy's job (deploy/haproxy, deploy/envoy, deploy/nginx).
"""
