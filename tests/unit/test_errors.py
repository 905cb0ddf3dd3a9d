import inspect

import falcon
import pytest

from agentainer import errors
from agentainer.api.http_errors import status_of

ERROR_CLASSES = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
                 if issubclass(cls, errors.AgentainerError)]

STATUS = {
    errors.AgentainerError: falcon.HTTP_500,
    errors.InvalidInput: falcon.HTTP_400,
    errors.InvalidConfig: falcon.HTTP_400,
    errors.MountRefused: falcon.HTTP_403,
    errors.Unauthorized: falcon.HTTP_401,
    errors.Forbidden: falcon.HTTP_403,
    errors.NotAnAgent: falcon.HTTP_403,
    errors.CallNotAllowed: falcon.HTTP_403,
    errors.Misdirected: falcon.HTTP_421,
    errors.HostNotAllowed: falcon.HTTP_421,
    errors.NotFound: falcon.HTTP_404,
    errors.AgentNotFound: falcon.HTTP_404,
    errors.ImageNotFound: falcon.HTTP_404,
    errors.Conflict: falcon.HTTP_409,
    errors.NameTaken: falcon.HTTP_409,
    errors.InvalidTransition: falcon.HTTP_409,
    errors.Busy: falcon.HTTP_409,
    errors.RangeNotSatisfiable: falcon.HTTP_416,
    errors.BeyondCapture: falcon.HTTP_416,
    errors.Unprocessable: falcon.HTTP_422,
    errors.RuntimeFailure: falcon.HTTP_422,
    errors.Unavailable: falcon.HTTP_503,
    errors.QueueFull: falcon.HTTP_503,
    errors.AgentOverloaded: falcon.HTTP_503,
    errors.TooManyFollows: falcon.HTTP_503,
    errors.TooManyRequests: falcon.HTTP_429,
    errors.AgentAtCapacity: falcon.HTTP_429,
    errors.InsufficientStorage: falcon.HTTP_507,
    errors.JournalFull: falcon.HTTP_507,
}


# NOTE: the classes whose constructor takes more than a message
ARGS = {errors.CallNotAllowed: ("caller", "target"), errors.BeyondCapture: ("req-1", 10)}


def test_every_error_class_has_a_status_here():
    assert set(ERROR_CLASSES) == set(STATUS)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_status_of(cls):
    assert status_of(cls(*ARGS.get(cls, ("x",)))) == STATUS[cls]


@pytest.mark.parametrize("cls", [errors.Unavailable, errors.QueueFull, errors.AgentOverloaded,
                                 errors.TooManyFollows, errors.JournalFull,
                                 errors.AgentAtCapacity],
                         ids=lambda cls: cls.__name__)
def test_refusals_for_now_say_when_to_retry(cls):
    assert cls("x").retry_after > 0


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_class_defines_its_own_code(cls):
    assert isinstance(vars(cls).get("code"), str) and cls.code


def test_codes_are_distinct():
    codes = [cls.code for cls in ERROR_CLASSES]
    assert len(set(codes)) == len(codes)


def test_code_can_be_overridden_per_instance():
    error = errors.InvalidInput("no", code="volume_refused")
    assert (error.code, error.message, str(error)) == ("volume_refused", "no", "no")
    assert errors.InvalidInput("no").code == "invalid_input"
