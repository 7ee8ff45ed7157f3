"""Regenerate saelens_reference/ with SAELens' own Qwen-Scope loader (run in a venv with sae-lens installed).

    python -m venv /tmp/sl && /tmp/sl/bin/pip install -c constraints-cpu.txt torch==2.13.0 sae-lens
    /tmp/sl/bin/python tests/data/make_saelens_reference.py

Writes a small synthetic checkpoint in the exact Qwen-Scope format (layer3.sae.pt, d_model 64, d_sae 256, k 16),
loads it through ``sae_lens.loading.pretrained_sae_loaders.qwen_scope_sae_huggingface_loader`` (the hub download
is pointed at the local file; d_in / d_sae are overridden since the repo id names the full-size group) and
stores SAELens' encode / decode of fixed inputs. tests/test_saelens_reference.py compares qscope_lab to them.
"""

from pathlib import Path

import sae_lens
import torch
from sae_lens import SAE
from sae_lens.loading import pretrained_sae_loaders as loaders
from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting
from safetensors.torch import save_file

OUT = Path(__file__).parent / "saelens_reference"
REPO = "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_16"  # parsed by SAELens for k; sizes overridden below
D_MODEL, D_SAE, K, LAYER = 64, 256, 16, 3


def main() -> None:
    OUT.mkdir(exist_ok=True)
    gen = torch.Generator().manual_seed(2026)
    W_dec = torch.randn(D_MODEL, D_SAE, generator=gen)
    W_dec /= W_dec.norm(dim=0, keepdim=True)
    state = {"W_enc": 0.5 * W_dec.T.contiguous() + 0.1 * torch.randn(D_SAE, D_MODEL, generator=gen),
             "W_dec": W_dec, "b_enc": 0.2 * torch.randn(D_SAE, generator=gen) - 0.1,
             "b_dec": 0.3 * torch.randn(D_MODEL, generator=gen)}
    ckpt = OUT / f"layer{LAYER}.sae.pt"
    torch.save(state, ckpt)

    loaders.hf_hub_download = lambda repo_id, filename, **_: str(OUT / filename)
    cfg, sd, _ = loaders.qwen_scope_sae_huggingface_loader(
        REPO, ckpt.name, device="cpu", cfg_overrides={"d_in": D_MODEL, "d_sae": D_SAE})
    cfg = handle_config_defaulting(cfg)
    sae = SAE.from_dict(cfg)
    sae.process_state_dict_for_loading(sd)
    sae.load_state_dict(sd)

    x = 2.0 * torch.randn(48, D_MODEL, generator=gen)
    with torch.no_grad():
        acts = sae.encode(x)
        x_hat = sae.decode(acts)
    assert int((acts > 0).sum(-1).max()) <= K
    save_file({"x": x, "acts": acts.contiguous(), "x_hat": x_hat.contiguous()}, str(OUT / "expected.safetensors"),
              metadata={"sae_lens": sae_lens.__version__, "repo_id": REPO, "k": str(K), "layer": str(LAYER)})
    print(f"sae-lens {sae_lens.__version__}: wrote {ckpt.name} and expected.safetensors to {OUT}")


if __name__ == "__main__":
    main()
