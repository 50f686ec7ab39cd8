"""Finesse 2's beam trace, reproduced on a Finesse 3 model.

With several ``cav``/``gauss`` commands and higher-order modes, Finesse 2 and
Finesse 3 can give a node different beam parameters, and then different numbers
(mode mismatch is computed where the traces meet). Measured against Finesse 2.3.1
(its ``trace 8`` output), Finesse 2 traces so:

1. every cavity, in file order, sets the beam parameters of the nodes on its round
   trip; a node on several cavities keeps the last cavity's (Finesse 3: the first);
2. then every ``gauss``, in file order and wherever it stands in the file, sets its
   node and, propagated across the node's space, the node at the space's far end,
   cavity nodes included;
3. from the first cavity's first node (without a cavity, the first ``gauss``'s), a
   depth-first walk over the whole network (through components and spaces, both
   ways, also through cavity nodes) gives each node not set yet the beam parameter
   propagated from the node it was reached from.

So a ``gauss`` at a laser before a modulator fixes the beam only up to the
modulator: the walk from the cavity reaches the rest first (aLIGO files with the
input beam set at the laser and the power-recycling cavity traced).

Finesse 2 keeps one beam parameter per node, for the beam travelling the way its
trace reached the node (``trace 8`` prints it as ``component --> node``), and its
``bp`` detectors report that one, with or without ``*``: along a cavity's round trip
the way the round trip first passes the node, leaving the component a ``gauss``
names, leaving a component at its other ports, and arriving at a space's far end.
:func:`reported_nodes` gives those directions.

Finesse 3 instead traces each cavity outward in the direction its beam leaves it, so
the stretch between two cavities (aLIGO's input optics between the mode cleaner and
the power-recycling cavity) can take its beam from the other cavity.

:func:`reproduce` computes Finesse 2's beam parameters with the model's own ABCD
matrices, then makes Finesse 3 trace the same: cavity priorities so that the last
cavity wins where cavities overlap, and a ``Gauss`` with Finesse 2's beam parameter
where Finesse 2's walk enters a stretch from another side than Finesse 3. It checks
the result node by node and raises :class:`TraceDiffers` when it cannot match.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import finesse

RTOL = 1e-9  # beam parameters of a node agree (relative to |q|)


class TraceDiffers(Exception):
    """Finesse 3 cannot be made to trace the beam as Finesse 2 does.

    Parameters
    ----------
    why : str
        What cannot be matched.
    source : str, optional
        The ``cav``/``gauss`` at fault, if one is.
    """

    def __init__(self, why: str, source: str | None = None):
        super().__init__(why)
        self.source = source


def _transform(abcd, q: complex, nr1: float, nr2: float) -> complex:
    (a, b), (c, d) = abcd
    q1 = q / nr1
    return nr2 * (a * q1 + b) / (c * q1 + d)


def _reverse(q: complex) -> complex:
    """The beam parameter of the same beam seen in the opposite direction."""
    return -q.conjugate()


class _Walk:
    """Finesse 2's depth-first walk over ports, setting beam parameters per node."""

    def __init__(self, model: finesse.Model):
        from finesse.utilities.components import refractive_index

        self.model = model
        self.net = model.optical_network
        self.nr = refractive_index
        self.q: dict = {}  # node -> (qx, qy), for both directions of each port
        self.parent: dict = {}  # node set by the walk -> node it was propagated from
        self.stored: dict = {}  # node (either direction) -> the direction kept
        self.seen: set = set()
        self.nodes = {n.full_name: n for n in model.optical_nodes}

    def set(self, node, qs, parent) -> None:
        """Give ``node`` the beam parameters ``qs`` (x, y), reached from ``parent``."""
        self.q[node] = qs
        self.q[node.opposite] = tuple(_reverse(q) for q in qs)
        self.parent[node] = parent
        self.keep(node)

    def keep(self, node) -> None:
        """Finesse 2 keeps the beam parameter of the beam travelling as ``node``."""
        self.stored[node] = self.stored[node.opposite] = node

    def origin(self, node):
        """The node the walk propagated ``node``'s beam parameter from, if any."""
        return self.parent.get(node) or self.parent.get(node.opposite)

    def through(self, src, dst, element) -> tuple[complex, complex]:
        """q at ``dst`` propagated from ``src`` (an edge src -> dst of the network)."""
        n1, n2 = self.nr(src), self.nr(dst)
        return tuple(_transform(element.ABCD(src, dst, d), q, n1, n2)
                     for d, q in zip(("x", "y"), self.q[src]))

    def back(self, src, dst, element) -> tuple[complex, complex]:
        """q at ``src`` from q at ``dst``, against the edge src -> dst."""
        import numpy as np

        n1, n2 = self.nr(dst), self.nr(src)
        return tuple(_transform(np.linalg.inv(element.ABCD(src, dst, d)), q, n1, n2)
                     for d, q in zip(("x", "y"), self.q[dst]))

    def start(self, port) -> None:
        """Walk from ``port``, a node of the first cavity: across its space first."""
        self.seen.add(port)
        far = self.across(port)
        if far is not None and far not in self.seen:
            self.enter(far)
        self.enter(port)

    def enter(self, port) -> None:
        """The walk reaches a component at ``port``.

        First every other port of the component takes its beam parameter from
        ``port`` (or, not coupled to it, from a port coupled to it that has one), and
        the port at the far end of each one's space from it; then the walk goes on
        from those far ports, in port order.
        """
        self.seen.add(port)
        component = port.component
        others = [n.port for n in component.optical_nodes
                  if not n.is_input and n.port is not port]
        for other in others:
            if other.o not in self.q:
                sources = [port] + [p for p in others if p is not other]
                for src in sources:
                    if src.o in self.q and self.couple(src, other):
                        break
            if other.o in self.q:
                self.across(other)
        for other in others:
            if other in self.seen or other.o not in self.q:
                continue
            self.seen.add(other)
            far = self.far(other)
            if far is not None and far not in self.seen:
                self.enter(far)

    def couple(self, src, dst) -> bool:
        """Set ``dst``'s beam parameters from ``src`` if a coupling joins them."""
        component = src.component
        if self.net.has_edge(src.i.full_name, dst.o.full_name):
            self.set(dst.o, self.through(src.i, dst.o, component), src.i)
            return True
        if self.net.has_edge(dst.i.full_name, src.o.full_name):
            self.set(dst.i, self.back(dst.i, src.o, component), src.o)
            return True
        return False

    def far(self, port):
        """The component port at the far end of the space at ``port``, if any."""
        for name in self.net.successors(port.o.full_name):
            far = self.nodes[name].port
            if far.component is not port.component:
                return far
        return None

    def across(self, port, force: bool = False):
        """Give the far end of ``port``'s space its beam parameter; return that port.

        Parameters
        ----------
        port : finesse.components.node.Port
            The port whose space to cross.
        force : bool
            Also when the far end has a beam parameter already (a ``gauss`` does so).
        """
        far = self.far(port)
        if far is not None and (force or far.i not in self.q):
            self.set(far.i, self.through(port.o, far.i, port.space), port.o)
        return far


def reproduce(model: finesse.Model, sources: list[str],
              geometry_varies: str | None) -> list[str]:
    """Make ``model`` trace its beam as Finesse 2 does; return what was done.

    Parameters
    ----------
    model : finesse.Model
        The parsed model, modes switched on.
    sources : list of str
        The ``cav``/``gauss`` names in file order.
    geometry_varies : str or None
        The first construct that changes beam parameters during the run (a sweep of a
        radius of curvature, a length...), if any: beam parameters fixed by a
        ``Gauss`` would then go stale, so that case raises :class:`TraceDiffers`.

    Raises
    ------
    TraceDiffers
        Saying why, when Finesse 3's trace cannot be made to match.
    """
    from finesse.components import Cavity, Gauss

    deps = [model.elements[name] for name in sources if name in model.elements]
    if len(deps) < 2:
        return []
    cavity_nodes = {n for d in deps if isinstance(d, Cavity) for n in d.path.nodes}
    round_trips = cavity_nodes | {n.opposite for n in cavity_nodes}  # both directions
    for dep in deps:
        if isinstance(dep, Gauss) and dep.node in round_trips:
            raise TraceDiffers(f"gauss {dep.name} sets node {dep.node.full_name} on a "
                               "cavity's round trip, where Finesse 2 lets it override "
                               "the cavity's beam and Finesse 3 cannot", dep.name)
    target = _finesse2_trace(model, deps)
    done: list[str] = []
    bad = _differing(model, target)
    if not bad:
        return done
    # Overlapping cavities: Finesse 2 keeps the last one's beam, Finesse 3 the first's.
    for priority, dep in enumerate(deps, start=1):
        dep.priority = priority
    bad = _differing(model, target)
    gausses = 0
    while bad:
        entries = [n for n in bad if n in target.parent and n not in cavity_nodes
                   and target.parent[n] not in bad]
        entries = _hosts(model, target, entries, cavity_nodes)
        if not entries or gausses > 50:
            node = bad[0]
            raise TraceDiffers(f"Finesse 3 gives node {node.full_name} a different beam "
                               "parameter from Finesse 2, and no gauss can fix it")
        if geometry_varies:
            raise TraceDiffers(f"where the beam traces of the cavities meet (node "
                               f"{entries[0].full_name}), Finesse 2's beam parameters "
                               "can only be fixed for a geometry that does not change, "
                               f"and {geometry_varies} changes it")
        top = max(d.priority for d in model.trace_order) + 1
        for node in entries:
            qx, qy = target.q[node]
            gausses += 1
            model.add(Gauss(f"f2trace__{gausses}", node, qx=qx, qy=qy, priority=top))
        try:
            bad = _differing(model, target)
        except Exception as exc:  # noqa: BLE001 - Finesse 3 refused the gauss
            raise TraceDiffers(f"Finesse 3 cannot place the beam parameters Finesse 2 "
                               f"traces: {exc}") from None
    if gausses:
        done.append(f"{gausses} beam parameter(s) set where Finesse 2's beam trace "
                    "reaches a node from another cavity than Finesse 3's would")
    return done


def _hosts(model: finesse.Model, target: _Walk, entries: list,
           cavity_nodes: set) -> list:
    """Nodes to give a ``Gauss`` so that Finesse 3 traces ``entries`` as Finesse 2.

    Finesse 3 takes one ``Gauss`` per space, and (as it compares the spaces of the
    ``Gauss`` nodes) only one at a port without a space. An entry whose space already
    has a ``Gauss`` in the model gets it at the node Finesse 2's walk reached it from
    instead (its beam parameter propagates to the entry through the same ABCD matrix),
    or further back along the walk. An entry whose space another entry of this round
    takes waits for the next round: the other's ``Gauss`` may set it already.

    Parameters
    ----------
    model : finesse.Model
        The model, with the ``Gauss`` objects placed so far.
    target : _Walk
        Finesse 2's beam trace.
    entries : list of finesse.components.node.OpticalNode
        Nodes where Finesse 2's walk enters a stretch Finesse 3 traces differently.
    cavity_nodes : set of finesse.components.node.OpticalNode
        The nodes of the cavities' round trips, which a ``Gauss`` cannot set.

    Returns
    -------
    list of finesse.components.node.OpticalNode
        In walk order, at most one per space and one without a space.
    """
    taken = {g.node.space for g in model.gausses.values()}
    hosts: dict = {}
    for node in entries:
        while node is not None and node.space in taken:
            node = target.origin(node)
        if node is not None and node not in cavity_nodes:
            hosts.setdefault(node.space, node)
    return list(hosts.values())


def _finesse2_trace(model: finesse.Model, deps: list) -> _Walk:
    """Finesse 2's beam parameter at every node (see the module's description)."""
    from finesse.components import Cavity

    cavities = [dep for dep in deps if isinstance(dep, Cavity)]
    gausses = [dep for dep in deps if not isinstance(dep, Cavity)]
    walk = _Walk(model)
    starts = []
    for dep in cavities + gausses:
        try:
            solo = model.beam_trace(enable_only=[dep], store=False)
        except Exception:  # noqa: BLE001 - an unstable cavity: Finesse 2 skips it too
            continue
        nodes = list(dep.path.nodes) if isinstance(dep, Cavity) else [dep.node]
        for node in nodes:
            for n in (node, node.opposite):
                qx, qy = solo[n]
                walk.q[n] = (complex(qx.q), complex(qy.q))
        # The way the round trip first passes each node (a gauss: its own node).
        for node in reversed(nodes):
            walk.keep(node)
        if not isinstance(dep, Cavity):
            walk.across(dep.node.port, force=True)
        starts.append(nodes[0])
    if starts:
        walk.start(starts[0].port)
    return walk


def reported_nodes(model: finesse.Model, sources: list[str]) -> dict:
    """The direction of each node whose beam parameter Finesse 2 reports.

    Parameters
    ----------
    model : finesse.Model
        The parsed model.
    sources : list of str
        The ``cav``/``gauss`` names in file order.

    Returns
    -------
    dict
        Each optical node traced, in either direction, to the node (same port) of the
        beam Finesse 2 keeps the beam parameter of there (see the module's
        description).
    """
    deps = [model.elements[name] for name in sources if name in model.elements]
    return _finesse2_trace(model, deps).stored if deps else {}


def _differing(model: finesse.Model, target: _Walk) -> list:
    """Nodes whose Finesse 3 beam parameters differ from Finesse 2's, in walk order."""
    trace = dict(model.beam_trace(store=False).items())
    bad = []
    for node, (want_x, want_y) in target.q.items():
        if node not in trace:
            continue
        qx, qy = trace[node]
        if (abs(complex(qx.q) - want_x) > RTOL * abs(want_x)
                or abs(complex(qy.q) - want_y) > RTOL * abs(want_y)):
            bad.append(node)
    order = {n: i for i, n in enumerate(target.parent)}
    return sorted(bad, key=lambda n: order.get(n, order.get(n.opposite, -1)))
