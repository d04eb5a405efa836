"""Files and state dicts that use the legacy dense kind names ("attn", "proj"; GPT files "mlp.proj") still load."""

import re

import pytest
import torch
from projectable import GPT, GPTConfig, ProjectableGPT
from projectable.gpt import DENSE_KINDS, FILE_FORMAT
from projectable.projected import FILE_FORMAT as PROJECTABLE_FORMAT
from safetensors import safe_open
from safetensors.torch import save_file


def read_file(path):
    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def legacy_parameter_name(name: str) -> str:
    """Today's state-dict name -> the legacy one: dense.attn_out_w -> dense.attn_w, mlp_down_b1 -> proj_b1."""
    name = re.sub(r"(^|\.)attn_out_(w|b|w1|b1|w2|b2)$", r"\1attn_\2", name)
    return re.sub(r"(^|\.)mlp_down_(w|b|w1|b1|w2|b2)$", r"\1proj_\2", name)


def test_gpt_file_with_legacy_names_loads(tmp_path, tiny_source):
    tiny_source.save(tmp_path / "new.safetensors")
    meta, tensors = read_file(tmp_path / "new.safetensors")
    legacy = {name.replace(".mlp.down.", ".mlp.proj."): t for name, t in tensors.items()}
    assert "blocks.1.mlp.proj.weight" in legacy and "blocks.1.mlp.down.weight" not in legacy
    save_file(legacy, str(tmp_path / "legacy.safetensors"), metadata=meta)
    assert meta["format"] == FILE_FORMAT

    loaded = GPT.load(tmp_path / "legacy.safetensors")
    assert loaded.config == tiny_source.config
    for name, tensor in tiny_source.named_tensors().items():
        assert torch.equal(loaded.named_tensors()[name], tensor), name
    x = torch.randint(0, 16, (2, 12))
    torch.testing.assert_close(loaded(x), tiny_source(x))


def test_projectable_file_with_legacy_names_loads(tmp_path, tiny_source, make_projectable):
    model = make_projectable(tiny_source)
    model.save(tmp_path / "new.safetensors")
    meta, tensors = read_file(tmp_path / "new.safetensors")
    legacy = {legacy_parameter_name(name): t for name, t in tensors.items()}
    # The constructed file really uses the legacy names, for the source and every generator.
    for name in ("source.dense.attn_w", "source.dense.proj_b", "generators.1_2.attn_w1", "generators.1_4.proj_b2"):
        assert name in legacy, name
    assert not any("attn_out_" in name or "mlp_down_" in name for name in legacy)
    save_file(legacy, str(tmp_path / "legacy.safetensors"), metadata=meta)
    assert meta["format"] == PROJECTABLE_FORMAT

    loaded = ProjectableGPT.load(tmp_path / "legacy.safetensors")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x, tasks = torch.randint(0, 16, (2, 12)), torch.rand(2, 3)
    for scale in (0.5, 0.25):
        torch.testing.assert_close(loaded.projected_logits(x, tasks, scale), model.projected_logits(x, tasks, scale))


@pytest.mark.parametrize("mlp", ["per_operator", "shared"])
def test_load_state_dict_accepts_legacy_names(tiny_source, make_projectable, mlp):
    """Resume checkpoints hold ``module.state_dict()``; the legacy names load with ``strict=True``."""
    model = make_projectable(tiny_source, mlp=mlp)
    legacy = {legacy_parameter_name(name): t.clone() for name, t in model.state_dict().items()}
    assert "source.dense.proj_w" in legacy
    fresh = make_projectable(GPT(GPTConfig.tiny(n_embd=32, n_head=2, n_layer=2)), mlp=mlp)
    fresh.load_state_dict(legacy, strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name


def test_both_names_at_once_are_refused(tiny_source):
    state = tiny_source.state_dict()
    state["dense.attn_w"] = state["dense.attn_out_w"].clone()
    with pytest.raises(ValueError, match="both dense.attn_w"):
        GPT(tiny_source.config).load_state_dict(state)


def test_legacy_kind_is_refused_with_its_new_name(tiny_source):
    assert DENSE_KINDS == ("qkv", "attn_out", "fc", "mlp_down")
    with pytest.raises(ValueError, match="renamed to 'mlp_down'"):
        tiny_source.dense.weights("proj")
