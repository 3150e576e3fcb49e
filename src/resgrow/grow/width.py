"""Width growth: more channels in every layer, as a pure function model -> (wider model, parameter map).

A ResNet's channels live in *spaces*: the stem's output, each stage's residual stream (shared by its
blocks through identity shortcuts, and by the stem when their widths match), each block's inner
layers, the image and the classes (fixed). Every weight reads one space and writes another, and a BN
or bias belongs to one. Widening gives each space its new channels, and every tensor is rebuilt from
its two spaces, so all families (post-activation and pre-activation blocks, bottlenecks, parameter-free
"A" shortcuts that zero-pad the channels, "B" projections) follow from one rule:

- "vt" (Yuan, Savarese, Maire 2023): new channels come in pairs. Both members of a pair get the same
  random incoming weights (fan-in [W; V; V]), so they carry equal values; every layer that reads them
  gets opposite weights (fan-out [W, Z, -Z]), so their contributions cancel and the function is kept.
  V and Z are drawn at He's variance for the new fan-in (2 / fan-in), the paper's fan-in
  parameterization. resgrow's nets are initialised at He's fan-out variance (2 / fan-out), so the two
  agree only where a layer has as many output as input channels (times its kernel size): in a stage's
  first conv, which doubles the channels, new elements start at twice the variance a fresh net's have,
  and in a bottleneck's 1x1 convs at a quarter or four times it. Variance transfer: a layer whose
  fan-in grows and that feeds a BN has its old weights multiplied by sqrt(C_old / C_new), the factor
  that keeps a 1/fan-in-variance weight at the variance of a net built at the new width under that
  parameterization; the BN's
  running statistics follow (mean x c, variance x c^2, its eps folded in), so eval outputs stay equal
  and training's batch statistics absorb the factor. A layer whose output is not normalised (a
  pre-activation block's last conv, the classifier) keeps its weights: a factor there would change the
  function. New BN channels start at weight 1, bias 0, mean 0, variance 1.
- "net2wider" (Chen, Goodfellow, Shlens 2016): a new channel copies a random old channel of its space
  (its incoming weights, BN parameters and statistics), and every layer that reads a copied channel
  divides that channel's outgoing weights among the copies. `noise` adds Gaussian noise of that
  fraction of the incoming weights' std to the copies (0: exactly the same function).

In a stage whose zero-padding shortcut ("A") extends the previous stage's channels, the previous
stage's new channels come first (the shortcut delivers them there), then the stage's own old channels,
then its own new ones; the parameter map follows the move. Optimizer state: old entries keep their
momentum (not rescaled), new entries start at zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ResgrowError
from ..models.resnet import ResNet, spec_of
from ..models.spec import ArchSpec

INITS = ("vt", "net2wider")


@dataclass
class Space:
    """A space's new channels: `src[j]` is the old channel that new channel j is (or copies, for
    net2wider); -1 for a new vt unit, whose pair partner is `pairs`."""

    old: int
    src: list[int]
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (first, second) new channel indices

    @property
    def new(self) -> int:
        return len(self.src)

    def share(self) -> torch.Tensor:
        """Per new channel, how many new channels carry its source's value (net2wider's divisor)."""
        counts: dict[int, int] = {}
        for s in self.src:
            counts[s] = counts.get(s, 0) + 1
        return torch.tensor([counts[s] if s >= 0 else 1 for s in self.src], dtype=torch.float64)


def _fixed(n: int) -> Space:
    return Space(n, list(range(n)))


def _space(old: int, new: int, init: str, g: torch.Generator, lead: Space | None = None) -> Space:
    """`old` -> `new` channels. `lead`: the space a zero-padding shortcut extends: its new channels come
    first (with their pairs), then this space's own old channels, then its own new ones."""
    src, pairs, first_own = (list(lead.src), list(lead.pairs), lead.old) if lead else ([], [], 0)
    src += list(range(first_own, old))
    extra = new - len(src)
    if extra < 0:
        raise ResgrowError(f"a width cannot shrink ({old} -> {new} channels)" if not lead else
                           f"a zero-padded stage must stay at least as wide as what it extends ({new} < {len(src)})")
    if init == "vt":
        if extra % 2:
            raise ResgrowError(f"vt adds channels in cancelling pairs, and {old} -> {new} channels leaves an odd "
                               f"number ({extra}) to add: use even widths")
        first = len(src)
        src += [-1] * extra
        pairs += [(first + 2 * k, first + 2 * k + 1) for k in range(extra // 2)]
    elif extra:
        pool = range(first_own, old)  # a padded stage's own channels: a copy must get what its source gets
        if not pool:
            raise ResgrowError("net2wider cannot add channels to a zero-padded stage that has none of its own to copy; "
                               "use init vt")
        src += [pool[int(i)] for i in torch.randint(len(pool), (extra,), generator=g)]
    return Space(old, src, pairs)


# ---------------------------------------------------------------- which space every layer reads and writes

@dataclass
class _Layer:
    path: str  # the module's name in the model
    kind: str  # conv | linear | bn
    out: str  # the space it writes (a BN: the space it normalises)
    inp: str | None = None  # the space it reads (convs and linear layers)
    bn: str | None = None  # a conv: the BN it feeds, whose statistics follow a variance-transfer rescale


def _structure(spec: ArchSpec) -> tuple[dict[str, tuple], list[_Layer]]:
    """Spaces in forward order (id -> ("fixed" | "free", None), ("alias", id) or ("pad", id)) and every layer."""
    preact = spec.block == "preact"
    spaces: dict[str, tuple] = {"rgb": ("fixed", None), "stem": ("free", None)}
    layers = [_Layer("stem.0", "conv", "stem", "rgb", None if preact else "stem.1")]
    if not preact:
        layers.append(_Layer("stem.1", "bn", "stem"))
    cur, cur_width = "stem", spec.stem_width
    for s, (n, w) in enumerate(zip(spec.blocks, spec.widths)):
        res = f"res{s}"
        if s == 0 and cur_width == w:
            spaces[res] = ("alias", cur)
        else:
            spaces[res] = ("pad", cur) if spec.shortcut == "A" else ("free", None)
        for b in range(n):
            p, inp = f"stages.{s}.blocks.{b}.", (cur if b == 0 else res)
            mids = [f"{p}mid", f"{p}mid2"] if spec.block == "bottleneck" else [f"{p}mid"]
            for m in mids:
                spaces[m] = ("free", None)
            layers += _block_layers(spec.block, p, inp, res, mids)
            if b == 0 and spaces[res][0] != "alias" and spec.shortcut == "B":
                layers.append(_Layer(f"{p}shortcut.0", "conv", res, inp, None if preact else f"{p}shortcut.1"))
                if not preact:
                    layers.append(_Layer(f"{p}shortcut.1", "bn", res))
        cur, cur_width = res, w
    spaces["classes"] = ("fixed", None)
    if preact:
        layers.append(_Layer("head.0", "bn", cur))
    layers.append(_Layer(f"head.{4 if preact else 2}", "linear", "classes", cur))
    return spaces, layers


def _block_layers(block: str, p: str, inp: str, res: str, mids: list[str]) -> list[_Layer]:
    if block == "basic":
        return [_Layer(f"{p}conv1", "conv", mids[0], inp, f"{p}bn1"), _Layer(f"{p}bn1", "bn", mids[0]),
                _Layer(f"{p}conv2", "conv", res, mids[0], f"{p}bn2"), _Layer(f"{p}bn2", "bn", res)]
    if block == "preact":  # the last conv feeds the residual add, not a BN: never rescaled
        return [_Layer(f"{p}bn1", "bn", inp), _Layer(f"{p}conv1", "conv", mids[0], inp, f"{p}bn2"),
                _Layer(f"{p}bn2", "bn", mids[0]), _Layer(f"{p}conv2", "conv", res, mids[0])]
    return [_Layer(f"{p}conv1", "conv", mids[0], inp, f"{p}bn1"), _Layer(f"{p}bn1", "bn", mids[0]),
            _Layer(f"{p}conv2", "conv", mids[1], mids[0], f"{p}bn2"), _Layer(f"{p}bn2", "bn", mids[1]),
            _Layer(f"{p}conv3", "conv", res, mids[1], f"{p}bn3"), _Layer(f"{p}bn3", "bn", res)]


def _sizes(spec: ArchSpec, spaces: dict[str, tuple]) -> dict[str, int]:
    sizes = {"rgb": spec.in_channels, "stem": spec.stem_width, "classes": spec.num_classes}
    for s, (n, w, m) in enumerate(zip(spec.blocks, spec.widths, spec.inner_widths)):
        sizes[f"res{s}"] = w
        for b in range(n):
            sizes[f"stages.{s}.blocks.{b}.mid"] = sizes[f"stages.{s}.blocks.{b}.mid2"] = m
    return {k: sizes[k] for k in spaces}


# ---------------------------------------------------------------- the operator

def wider_spec(spec: ArchSpec, widths, stem_width: int | None = None, inner_widths=None) -> ArchSpec:
    """`spec` at stage widths `widths`. Not given: inner widths in the same proportion to the stage widths as
    before, the stem's width tied to the first stage's when it was (as in He et al.'s CIFAR nets), else scaled
    with it. A schedule that must end at a given net gives both (`methods.widen.spec_schedule`)."""
    widths = tuple(int(w) for w in widths)
    if len(widths) != len(spec.widths):
        raise ResgrowError(f"widths {'-'.join(map(str, widths))} need one per stage ({len(spec.widths)})")
    inner = tuple(int(i) for i in inner_widths) if inner_widths is not None else \
        tuple(max(1, round(i * w / o)) for i, w, o in zip(spec.inner_widths, widths, spec.widths))
    if stem_width is None:
        tied = spec.stem_width == spec.widths[0]
        stem_width = widths[0] if tied else max(1, round(spec.stem_width * widths[0] / spec.widths[0]))
    return spec.replace(widths=widths, inner_widths=inner, stem_width=int(stem_width))


@torch.no_grad()
def widen(model: ResNet, widths, init: str = "vt", noise: float = 0.0, stem_width: int | None = None,
          generator: torch.Generator | None = None, rescale: bool = True, inner_widths=None) -> tuple[ResNet, dict]:
    """`model` with stage widths `widths` (inner and stem widths follow unless given: `wider_spec`), and a map from each
    new parameter name to (old name, transform of its optimizer state). The new model is on the old one's device
    and dtype and in its train/eval mode. Random draws come from `generator` (default: one seeded from
    torch's global generator, so a seeded run widens the same way every time). `rescale=False`: vt without
    the variance-transfer factor (the function is then kept exactly in training mode too, where a BN's eps
    otherwise makes the factor cost about eps (1 - c^2) / (2 var) of the output)."""
    if init not in INITS:
        raise ResgrowError(f"unknown widening init {init!r}; known: {', '.join(INITS)}")
    if not isinstance(model, ResNet):
        raise ResgrowError(f"cannot widen {type(model).__name__}: only resgrow ResNets (stem + stages of resgrow "
                           "blocks + head) can be widened")
    spec = spec_of(model)
    target = wider_spec(spec, widths, stem_width, inner_widths)
    g = generator or torch.Generator().manual_seed(int(torch.randint(2**62, ())))
    kinds, layers = _structure(spec)
    old, new = _sizes(spec, kinds), _sizes(target, kinds)
    spaces: dict[str, Space] = {}
    for sid, (kind, other) in kinds.items():
        if kind == "alias":
            if new[sid] != new[other]:
                raise ResgrowError(f"the stem and the first stage share their channels; widen them alike ({new[other]} "
                                   f"and {new[sid]})")
            spaces[sid] = spaces[other]
        elif kind == "fixed":
            spaces[sid] = _fixed(old[sid])
        else:
            spaces[sid] = _space(old[sid], new[sid], init, g, spaces[other] if kind == "pad" else None)
    p = next(model.parameters())
    wider = ResNet(target).to(p.device, p.dtype).train(model.training)
    olds, news = dict(model.named_modules()), dict(wider.named_modules())
    scale = {}  # BN path -> the factor its conv was rescaled by
    pmap: dict = {}
    for layer in layers:
        o, n = olds[layer.path], news[layer.path]
        out_space = spaces[layer.out]
        if layer.kind == "bn":
            _bn(o, n, out_space, scale.get(layer.path, 1.0), init)
            pmap.update(_vector_map(layer.path, ("weight", "bias"), out_space, init))
            continue
        in_space = spaces[layer.inp]
        c = math.sqrt(in_space.old / in_space.new) if (init == "vt" and rescale and layer.bn) else 1.0
        if layer.bn:
            scale[layer.bn] = c
        n.weight.copy_(_weight(o.weight, out_space, in_space, init, c, noise, g))
        pmap[f"{layer.path}.weight"] = (f"{layer.path}.weight", _state(out_space, in_space, init))
        if getattr(n, "bias", None) is not None:
            n.bias.copy_(_gather_vector(o.bias, out_space, fill=0.0))
            pmap[f"{layer.path}.bias"] = (f"{layer.path}.bias", _state(out_space, None, init))
    return wider, pmap


def _index(space: Space) -> tuple[torch.Tensor, torch.Tensor]:
    """(new channels that carry an old channel's value, the old channel each carries)."""
    src = torch.tensor(space.src)
    keep = (src >= 0).nonzero().flatten()
    return keep, src[keep]


def _weight(old_w: torch.Tensor, out_space: Space, in_space: Space, init: str, c: float, noise: float,
            g: torch.Generator) -> torch.Tensor:
    fan_in = in_space.new * math.prod(old_w.shape[2:])
    shape = (out_space.new, in_space.new, *old_w.shape[2:])
    w = torch.randn(shape, generator=g, dtype=torch.float64) * math.sqrt(2.0 / fan_in)
    (ro, so), (ri, si) = _index(out_space), _index(in_space)
    block = old_w.detach().double().cpu()[so][:, si]
    if init == "vt":
        block = block * c
    else:  # every reader of a copied channel shares its old weight among the copies
        block = block / in_space.share()[ri].view(1, -1, *[1] * (old_w.dim() - 2))
    w[ro[:, None], ri[None, :]] = block
    for a, b in in_space.pairs:  # readers of a pair: Z and -Z, so the pair's equal values cancel
        w[:, b] = -w[:, a]
    for a, b in out_space.pairs:  # a pair's two members: the same incoming weights V, so they carry equal values
        w[b] = w[a]
    if init == "net2wider" and noise:
        copies = [j for j, s in enumerate(out_space.src) if s >= 0 and j >= out_space.old]
        if copies:
            w[copies] += noise * block.std() * torch.randn(w[copies].shape, generator=g, dtype=torch.float64)
    return w.to(old_w.dtype)


def _gather_vector(old: torch.Tensor, out_space: Space, fill: float) -> torch.Tensor:
    out = torch.full((out_space.new,), fill, dtype=old.dtype, device=old.device)
    keep, src = _index(out_space)
    out[keep.to(old.device)] = old[src.to(old.device)]
    return out


def _bn(o: nn.BatchNorm2d, n: nn.BatchNorm2d, out_space: Space, c: float, init: str) -> None:
    """Old channels keep their parameters; statistics follow a rescaled conv (mean x c, var x c^2 with eps
    folded in, so var + eps scales by exactly c^2); new vt channels start as an identity BN."""
    n.weight.copy_(_gather_vector(o.weight, out_space, 1.0))
    n.bias.copy_(_gather_vector(o.bias, out_space, 0.0))
    n.running_mean.copy_(_gather_vector(o.running_mean * c, out_space, 0.0))
    n.running_var.copy_(_gather_vector(o.running_var * c * c + (c * c - 1) * o.eps, out_space, 1.0))
    n.num_batches_tracked.copy_(o.num_batches_tracked)


def _vector_map(path: str, names, out_space: Space, init: str) -> dict:
    return {f"{path}.{k}": (f"{path}.{k}", _state(out_space, None, init)) for k in names}


def _state(out_space: Space, in_space: Space | None, init: str):
    """The optimizer state of a widened tensor: old entries carried (net2wider's shared readers divided like
    their weights), new ones zero. Its `gather` attribute carries old entries unchanged (for per-element
    bookkeeping, such as which growth an element came from)."""
    def transform(t: torch.Tensor, init: str = init) -> torch.Tensor:
        inner = (in_space.new,) if in_space is not None else ()
        kernel = t.shape[2 if in_space is not None else 1:]
        out = torch.zeros((out_space.new, *inner, *kernel), dtype=t.dtype, device=t.device)
        (ro, so) = [x.to(t.device) for x in _index(out_space)]
        if in_space is None:
            out[ro] = t[so]
            return out
        ri, si = [x.to(t.device) for x in _index(in_space)]
        block = t[so][:, si]
        if init == "net2wider":
            block = block / in_space.share()[ri.cpu()].to(t.device, t.dtype).view(1, -1, *[1] * (t.dim() - 2))
        out[ro[:, None], ri[None, :]] = block
        return out
    transform.gather = lambda t: transform(t, "vt")
    return transform
