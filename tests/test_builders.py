import pytest

from configs import default
from sde_jax import EDMSDE, VESDE, VPSDE, CosineVPSDE, SubVPSDE, builders


@pytest.mark.parametrize(
    ("name", "cls"), [("vesde", VESDE), ("vpsde", VPSDE), ("subvpsde", SubVPSDE)]
)
def test_build_sde(name, cls):
    section = default.get_default_config().sde
    section.name = name
    section.sigma_max = 90.0
    section.beta_max = 10.0
    sde = builders.build_sde(section)
    assert isinstance(sde, cls)
    if cls is VESDE:
        assert (sde.sigma_min, sde.sigma_max) == (0.01, 90.0)
    else:
        assert (sde.beta_min, sde.beta_max) == (0.1, 10.0)


def test_build_new_sdes_from_their_own_fields():
    section = default.get_default_config().sde
    section.name, section.sigma_min, section.sigma_max = "edmsde", 0.002, 80.0
    assert builders.build_sde(section) == EDMSDE(sigma_min=0.002, sigma_max=80.0)
    section.name = "cosinevpsde"  # no offset / t_max in the section: the defaults
    assert builders.build_sde(section) == CosineVPSDE()


def test_unknown_sde_lists_the_valid_names():
    section = default.get_default_config().sde
    section.name = "cosine"
    with pytest.raises(
        ValueError,
        match=r"sde.name must be one of \['cosinevpsde', 'edmsde', 'subvpsde', 'vesde', 'vpsde'\]",
    ):
        builders.build_sde(section)
