"""ERM, empirical risk minimisation over the pooled source domains (Vapnik 1998), the reference every
domain-generalisation table needs; as in DomainBed (Gulrajani & Lopez-Paz, "In Search of Lost Domain
Generalization", ICLR 2021), which found that a carefully tuned ERM matches most DG algorithms.

Each step takes a batch of 32 images from every source domain and minimises their cross-entropy
together. What differs from DomainBed: no ImageNet-pretrained ResNet-50 can be fetched here, so the
backbone (Conv-4 by default) trains from random initialisation, with Adam at 1e-3 rather than 5e-5;
images are 84x84 (DomainBed: 224) and the augmentation is random crops and flips (DomainBed adds
colour jitter and grey-scale). The numbers DomainBed reported are beside it for reference only: they
come from a pretrained network and no from-scratch table has been published.

The same name runs the noisy-label protocols (caltech101-noisy-*), as the baseline Ren et al. 2018 and Shu et
al. 2019 compare with: cross-entropy on the 25 noisy-labelled and the 5 clean images per class pooled, the clean
ones as ordinary training data (`noisy_labels = "pooled"`), every example weighted 1. One name because it is one
algorithm: only the data differ, and the page and `bench compare` pair it with the reweighting methods by name.
"""

from __future__ import annotations

from benchmark.methods import NOISY_RECIPE, DomainLearner, NoisyBatch, PaperResult, Recipe, cifar_anchors, register

DOMAINBED = "Gulrajani & Lopez-Paz 2021, appendix table for PACS (training-domain validation, ResNet-50)"
PRETRAINED = (
    "ImageNet-pretrained ResNet-50 at 224x224; here from scratch at 84x84, so not comparable. "
    "DomainBed's ± (not shown) is a standard error over 3 trials"
)
RECIPE_NOTE = (
    "DomainBed's batch of 32 images per source domain, 5,000 steps and a check every 300 steps; from "
    "scratch instead of an ImageNet-pretrained ResNet-50, so Adam at 1e-3 (DomainBed: 5e-5) and no dropout"
)


def domainbed(numbers: dict[str, float]) -> dict[str, PaperResult]:
    return {f"pacs-dg-{t}": PaperResult(v, None, DOMAINBED, PRETRAINED) for t, v in numbers.items()}


@register
class ERM(DomainLearner):
    name = "erm"
    paper = "Vapnik, Statistical Learning Theory, 1998 (as the DG baseline of Gulrajani & Lopez-Paz, ICLR 2021)"
    noisy_labels = "pooled"  # on the noisy-label protocols: the clean meta images are ordinary training data
    RECIPES = (
        Recipe("pacs-dg", {}, source="Gulrajani & Lopez-Paz 2021, Sec. 4 and Appendix", note=RECIPE_NOTE),
        NOISY_RECIPE,
    )
    PAPER_RESULTS = {
        **domainbed({"art-painting": 84.7, "cartoon": 80.8, "photo": 97.2, "sketch": 79.3}),
        **cifar_anchors(86.98, 77.52, 73.63),
    }

    def training_step(self, batch, batch_idx):
        xs, ys = (batch.x, batch.y) if isinstance(batch, NoisyBatch) else batch
        logits = self(xs.flatten(0, -4))  # DG: [domains, B, C, H, W]; noisy labels: [B, C, H, W]
        loss = self.pooled_loss(logits, ys)
        self.log_step(loss, logits, ys)
        return loss
